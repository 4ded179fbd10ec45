"""Every process's token store follows the database (see the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime

from channels.db import database_sync_to_async
from django.utils import timezone

from cluster.models import NodeTokenRecord
from cluster.node_token.bootstrap import ensure_node_token
from cluster.node_token.records import SYNC_INTERVAL_S, VERIFIED_WRITE_S, next_token_recipients
from cluster.tokens import NodeTokenStore, TokenFileError, fingerprint, read_token_file
from elastickv_admin.lib import crypto

logger = logging.getLogger("cluster.node_token")


class DatabaseTokenStore(NodeTokenStore):
    """The node client's tokens, read from the database at most once per ``interval_s``
    (see the module docstring for the bound). Until the database has been read once (or
    when it cannot be read at first), the --nodeTokenFile token is used."""

    def __init__(self, token_file: str | None, *, interval_s: float = SYNC_INTERVAL_S) -> None:
        super().__init__(None)
        self.token_file = token_file
        self.interval_s = interval_s
        self._fresh_until = 0.0  # time.monotonic()
        # (slot, ciphertext, known addresses) rows
        self._seen: frozenset[tuple[str, str, tuple[str, ...]]] | None = None
        self._refresh_lock = threading.Lock()
        self._failing = False
        # Ordinary calls a node accepted, by slot: (token fingerprint, when), written to the
        # token's "last verified" at the next sync, at most once per VERIFIED_WRITE_S.
        self._verified: dict[str, tuple[str, datetime]] = {}
        self._verified_written: dict[str, float] = {}

    def accepted(self, address: str, label: str, *, limit: int | None = None) -> None:
        super().accepted(address, label, limit=limit)
        with self._lock:
            value = next((t.value for t in self._tokens if t.label == label), None)
            if value is not None:
                self._verified[label] = (fingerprint(value), timezone.now())

    def _write_verified(self) -> None:
        """A successful node call verifies the token it carried (not only a probe)."""
        now = time.monotonic()
        with self._lock:
            due = {
                label: seen
                for label, seen in self._verified.items()
                if now - self._verified_written.get(label, -VERIFIED_WRITE_S) >= VERIFIED_WRITE_S
            }
            for label in due:
                del self._verified[label]
                self._verified_written[label] = now
        for label, (fp, when) in due.items():
            NodeTokenRecord.objects.filter(slot=label, fingerprint=fp).update(verified_at=when)

    async def sync(self) -> None:
        if time.monotonic() < self._fresh_until:
            return
        await database_sync_to_async(self.refresh, thread_sensitive=False)()

    def mark_stale(self) -> None:
        self._fresh_until = 0.0

    def refresh(self) -> None:
        with self._refresh_lock:
            if time.monotonic() < self._fresh_until:
                return  # another caller just did
            try:
                if self._seen is None:
                    ensure_node_token(self.token_file)
                rows = frozenset(
                    (slot, ciphertext, tuple(known or ()))
                    for slot, ciphertext, known in NodeTokenRecord.objects.values_list(
                        "slot", "ciphertext", "known_addresses"
                    )
                )
                if rows != self._seen:
                    by_slot = {slot: (ciphertext, known) for slot, ciphertext, known in rows}
                    current, next_ = by_slot.get("current"), by_slot.get("next")
                    self.set_tokens(
                        crypto.decrypt(current[0]).decode("utf-8") if current else None,
                        crypto.decrypt(next_[0]).decode("utf-8") if next_ else None,
                        next_token_recipients(next_[1] if next_ else ()),
                    )
                    self._seen = rows
                self._write_verified()
                if self._failing:
                    logger.info("node token: reading the database works again")
                self._failing = False
            except Exception as exc:  # node calls go on with the tokens held
                self._failed(exc)
            self._fresh_until = time.monotonic() + self.interval_s

    def _failed(self, exc: Exception) -> None:
        reason = (
            "the stored token cannot be decrypted: is ELASTICKV_ADMIN_SECRETS_KEY (or "
            "ELASTICKV_ADMIN_SECRETS_OLD_KEYS) the key that wrote it?"
            if isinstance(exc, crypto.InvalidToken)
            else f"{type(exc).__name__}: {exc}"
        )
        if self._seen is None and self.token_file and self.insecure:
            with contextlib.suppress(TokenFileError):
                self.set_tokens(read_token_file(self.token_file), None)
        if not self._failing:
            logger.warning(
                "node token: cannot read the database (%s); using the tokens held (%s)",
                reason,
                "from --nodeTokenFile" if self._seen is None else "last read",
            )
        self._failing = True
