"""The tamper-evident chain: canonical form, MACs, and verification.

mac(event) = HMAC-SHA256(AUDIT_KEY, prev_mac || "\n" || canonical(event)), where
canonical(event) is sorted-key compact JSON of the event's fields including its seq.
An edit changes that event's MAC; a deletion or reorder breaks the next event's
prev_mac or the seq sequence; a deleted tail no longer meets the chain head, unless the head
row was rewritten too: that is what the anchor outside the database is for (audit/anchor.py).

The key rotates (README "Rotating the keys"): each event names the key that MAC'd it by id
(``key_id``), and keys in ELASTICKV_ADMIN_AUDIT_OLD_KEYS still verify the events they MAC'd,
so one chain may span several keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from audit.models import AuditChain, AuditEvent
from elastickv_admin.lib.crypto import Keyring, keyring

# A key for verification: one key (a test's, a tool's), the configured keyring, or None for
# the configured keyring.
Keys = str | Keyring | None

VERIFY_CHUNK = 5000
PRUNE_ACTION = "audit.pruned"


def canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_mac(key: str, prev_mac: str, fields: dict[str, Any]) -> str:
    message = f"{prev_mac}\n{canonical(fields)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def audit_keys(keys: Keys = None) -> Keyring:
    if isinstance(keys, Keyring):
        return keys
    if isinstance(keys, str):
        return Keyring(keys)
    return keyring("AUDIT_KEY", "AUDIT_OLD_KEYS")


def audit_key() -> str:
    """The key that MACs new events (the primary)."""
    return audit_keys().primary


def mac_matches(keys: Keyring, kid: str, prev_mac: str, fields: dict[str, Any], mac: str) -> bool:
    """Whether `mac` is the MAC of (prev_mac, fields) under the key `kid` names (every
    configured key for an event from before key ids)."""
    return any(
        hmac.compare_digest(compute_mac(key, prev_mac, fields), mac) for key in keys.candidates(kid)
    )


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    verified: int
    broken_seq: int | None = None
    reason: str = ""


class UnreadableEvent(Exception):
    def __init__(self, seq: int, cause: BaseException) -> None:
        super().__init__(f"the row cannot be read ({type(cause).__name__}: {cause})")
        self.seq = seq


def _one_by_one(after: int) -> list[AuditEvent]:
    """A chunk that failed to load, row by row, to name the row that cannot be read."""
    events = []
    seqs = AuditEvent.objects.filter(seq__gt=after).order_by("seq").values_list("seq", flat=True)
    for seq in seqs[:VERIFY_CHUNK]:
        try:
            events.append(AuditEvent.objects.get(seq=seq))
        except Exception as exc:  # a value the field cannot convert: name the row
            raise UnreadableEvent(seq, exc) from exc
    return events


def _events_from(start_seq: int) -> Iterator[AuditEvent]:
    """All events in chain order, in keyset chunks (constant memory at millions of rows)."""
    last = start_seq - 1
    while True:
        try:
            chunk = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq")[:VERIFY_CHUNK])
        except Exception:
            chunk = _one_by_one(last)
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].seq


def verify_event(event: AuditEvent, key: Keys = None) -> bool:
    return mac_matches(
        audit_keys(key), event.key_id, event.prev_mac, event.canonical_fields(), event.mac
    )


def verify_chain(key: Keys = None) -> VerifyResult:
    keys = audit_keys(key)
    chain = AuditChain.objects.filter(pk=1).first()
    if chain is None:
        return VerifyResult(
            False, 0, None, "the chain head row (audit_auditchain id 1) is missing: deleted"
        )
    try:
        return _verify_events(chain, keys)
    except UnreadableEvent as exc:
        return VerifyResult(False, 0, exc.seq, str(exc))


def _verify_events(chain: AuditChain, key: Keyring) -> VerifyResult:
    expected_seq, expected_prev = chain.anchor_seq, chain.anchor_mac
    first = AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first()
    if first is not None and first < chain.anchor_seq:
        return VerifyResult(False, 0, first, "event before the chain's anchor")
    verified = 0
    last_prune: AuditEvent | None = None
    for event in _events_from(chain.anchor_seq):
        try:
            broken = _check_event(event, expected_seq, expected_prev, key)
        except Exception as exc:  # a NULL or mistyped column: name the row, no traceback
            broken = str(UnreadableEvent(event.seq, exc))
        if broken:
            return VerifyResult(False, verified, event.seq, broken)
        if event.action == PRUNE_ACTION:
            last_prune = event
        verified += 1
        expected_seq, expected_prev = event.seq + 1, event.mac
    if chain.head_seq != expected_seq - 1 or not hmac.compare_digest(chain.head_mac, expected_prev):
        return VerifyResult(
            False,
            verified,
            chain.head_seq,
            "chain head does not match the last event (events at the end deleted)",
        )
    if chain.anchor_seq > 1:
        # The anchor itself is vouched for by the (MAC-protected) latest prune event.
        details = last_prune.details if last_prune else {}
        if not isinstance(details, dict) or (
            details.get("kept_from_seq") != chain.anchor_seq
            or details.get("last_pruned_mac") != chain.anchor_mac
        ):
            return VerifyResult(
                False,
                verified,
                chain.anchor_seq,
                "chain anchor does not match the latest prune event",
            )
    return VerifyResult(True, verified)


def _check_event(event: AuditEvent, expected_seq: int, expected_prev: str, key: Keyring) -> str:
    """Why this event breaks the chain, or ''."""
    if event.seq != expected_seq:
        return f"expected event #{expected_seq} here (missing or reordered events)"
    if not hmac.compare_digest(event.prev_mac, expected_prev):
        return "previous MAC does not match (event deleted or moved)"
    if not verify_event(event, key):
        return "MAC does not match (event edited)"
    return ""
