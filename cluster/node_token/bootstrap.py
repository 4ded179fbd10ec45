"""--nodeTokenFile seeds the token table once, on a first start."""

from __future__ import annotations

import logging
from pathlib import Path

from django.db import transaction

from audit.service import record_event
from cluster.models import NodeTokenRecord
from cluster.node_token.records import TARGET, actor_name, bump, locked_head
from cluster.tokens import TokenFileError, fingerprint, read_token_file
from elastickv_admin.lib import crypto
from elastickv_admin.lib.config import portal_config

logger = logging.getLogger("cluster.node_token")


def do_bootstrap_node_token(token: str, *, source_file: str, actor: str = "system") -> bool:
    """Seed the table from --nodeTokenFile when it holds no token yet; False when it does."""
    token = token.strip()
    with transaction.atomic():
        head = locked_head()
        if NodeTokenRecord.objects.exists():
            return False
        fp = fingerprint(token)
        NodeTokenRecord.objects.create(
            slot=NodeTokenRecord.Slot.CURRENT,
            ciphertext=crypto.encrypt(token.encode("utf-8")),
            fingerprint=fp,
            source=NodeTokenRecord.Source.FILE,
            created_by=actor_name(actor),
        )
        bump(head)
        record_event(
            "node_token.bootstrapped",
            target=TARGET,
            actor=actor,
            details={"fingerprint": fp, "from": "--nodeTokenFile", "file": source_file},
        )
    return True


def ensure_node_token(token_file: str | None = None, *, warn: bool = True) -> None:
    """Seed the table from --nodeTokenFile when it holds no token yet. Otherwise, with
    ``warn``, warn (fingerprints only) when the file holds a token the database does not:
    the process's token store does so once, on its first read."""
    config = portal_config()
    path = token_file or config.node_token_file
    if config.insecure_no_auth or not path:
        return
    stored_any = NodeTokenRecord.objects.exists()
    if stored_any and not warn:
        return  # the usual case: nothing to read, nothing to lock
    try:
        token = read_token_file(path)
    except TokenFileError as exc:
        if not stored_any:
            logger.error("no node token: %s", exc)
        return
    if not stored_any and do_bootstrap_node_token(token, source_file=str(Path(path))):
        logger.info("node token: seeded the database from --nodeTokenFile (%s)", fingerprint(token))
        return
    if not warn:
        return
    stored = {row.slot: row.fingerprint for row in NodeTokenRecord.objects.all()}
    fp = fingerprint(token)
    if fp not in stored.values():
        logger.warning(
            "--nodeTokenFile %s holds %s, but the database holds %s: the database is the "
            "source of truth (the file only seeds a first start); update or ignore the file",
            path,
            fp,
            " and ".join(f"{slot} {f}" for slot, f in sorted(stored.items())) or "nothing",
        )
