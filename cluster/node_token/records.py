"""The stored node tokens: read consistently, locked for a change, version bumped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils import timezone

from cluster.models import NodeTokenCheck, NodeTokenHead, NodeTokenRecord
from elastickv_admin.lib import crypto
from elastickv_admin.lib.config import portal_config
from elastickv_admin.lib.rows import locked_singleton

# How stale a process's tokens may be (see the package docstring).
SYNC_INTERVAL_S = 1.0
# How often ordinary calls refresh a token's "last verified" in the database.
VERIFIED_WRITE_S = 60.0
TARGET = "node-token"
State = NodeTokenCheck.State
# A node in one of these states keeps working when next becomes current.
ACCEPTS_NEXT = frozenset({State.NEXT, State.ANY})


# --- reading the stored tokens --------------------------------------------------------------


@dataclass(frozen=True)
class StoredTokens:
    """The decrypted tokens of one version. Never shown, never logged."""

    version: int
    current: str | None = field(repr=False)
    next: str | None = field(repr=False)
    next_to: frozenset[str] = frozenset()  # next_token_recipients of the rotation


def next_token_recipients(known_addresses: Iterable[str]) -> frozenset[str]:
    """The addresses the next token may be sent to: those recorded when the rotation
    started, and the seeds (operator-configured, trusted)."""
    return frozenset(known_addresses) | frozenset(portal_config().seeds)


def decrypt_row(row: NodeTokenRecord) -> str:
    return crypto.decrypt(row.ciphertext).decode("utf-8")


def load_tokens() -> StoredTokens:
    """The head's version and its tokens, consistently: every change bumps the version in
    the transaction that changes the rows, so equal versions before and after the read
    mean the rows belong to that version."""
    while True:
        before = stored_version()
        rows = {row.slot: row for row in NodeTokenRecord.objects.all()}
        if stored_version() == before:
            break
    current, next_ = rows.get(NodeTokenRecord.Slot.CURRENT), rows.get(NodeTokenRecord.Slot.NEXT)
    return StoredTokens(
        before,
        decrypt_row(current) if current else None,
        decrypt_row(next_) if next_ else None,
        next_token_recipients(next_.known_addresses if next_ else ()),
    )


def stored_version() -> int:
    version = NodeTokenHead.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(version or 0)


def locked_head() -> NodeTokenHead:
    """The head row, locked for this transaction (made first in a freshly flushed database)."""
    return locked_singleton(NodeTokenHead)


def bump(head: NodeTokenHead) -> None:
    """A change to the token rows: the head's version moves on (callers hold its lock)."""
    head.version += 1
    head.updated_at = timezone.now()
    head.save(update_fields=["version", "updated_at"])
    # Probes of the previous version say nothing about the new tokens.
    NodeTokenCheck.objects.all().delete()


def actor_name(actor: str) -> str:
    return (actor or "unknown")[:150]
