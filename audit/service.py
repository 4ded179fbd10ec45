"""record_event: the ONE audit helper. Every state change (view, command, consumer) goes
through an action function that calls it inside the change's own transaction, so an audit
write failure rolls the change back: no unaudited state change.

Writers serialize on the chain head: SELECT ... FOR UPDATE of the single AuditChain row
(PostgreSQL), or SQLite's IMMEDIATE transactions, so two portal processes cannot fork the
chain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError, transaction
from django.utils import timezone

from audit.anchor import advance_anchor
from audit.chain import PRUNE_ACTION, audit_keys, compute_mac
from audit.context import Actor, AuditContext, actor_name, current, new_request_id
from audit.models import AuditChain, AuditEvent, Outcome
from elastickv_admin.lib.rows import locked_singleton

log_stream = logging.getLogger("elastickv_admin.audit")
logger = logging.getLogger(__name__)

# Detail keys whose values are never written, whatever a caller passes (defence in depth:
# callers must not pass secrets in the first place).
SECRET_KEYS = frozenset(
    {"password", "password1", "password2", "token", "secret", "seed", "key", "otp_token"}
)
REDACTED = "[redacted]"


class AuditWriteError(Exception):
    """The audit log could not be written; the action it records must not happen."""

    def __init__(self, action: str, cause: BaseException) -> None:
        super().__init__(
            f"the audit log could not be written ({type(cause).__name__}: {cause}); "
            f"{action} was not performed"
        )
        self.action = action


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if str(k).lower() in SECRET_KEYS else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _json_safe(details: Mapping[str, Any] | None) -> dict[str, Any]:
    # Round-trip so what is MAC'd is exactly what the database gives back.
    safe: dict[str, Any] = json.loads(json.dumps(_scrub(details or {}), default=str))
    return safe


def _lock_chain() -> AuditChain:
    return locked_singleton(AuditChain)


def _emit(event: AuditEvent) -> None:
    """Once committed: the event as one JSON line (with its seq and MACs, so a copy of the
    stream anchors the chain's tail) and the anchor file moved forward (audit/anchor.py)."""
    line = event.canonical_fields()
    line.update(event="audit", prev_mac=event.prev_mac, mac=event.mac, key_id=event.key_id)
    log_stream.info(json.dumps(line, sort_keys=True, separators=(",", ":")))
    advance_anchor(event.seq, event.mac, event.prev_mac)


def record_event(
    action: str,
    *,
    target: str = "",
    outcome: str = Outcome.SUCCESS,
    details: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> AuditEvent:
    """Append one event to the chain; raise AuditWriteError if it cannot be written.
    `actor`: who acted (a ``do_*`` action passes its own); else the request's or command's.

    Call it inside the transaction of the change it records (action functions use
    ``transaction.atomic``), so that a failed write undoes the change.
    """
    context = current() or AuditContext(request_id=new_request_id(), actor="system")
    event = AuditEvent(
        actor=(actor_name(actor) if actor is not None else context.actor or "anonymous")[:150],
        source_ip=context.source_ip,
        user_agent=context.user_agent[:300],
        request_id=context.request_id,
        action=action,
        target=target[:300],
        outcome=str(outcome),
        details=_json_safe(details),
    )
    try:
        with transaction.atomic():
            chain = _lock_chain()
            # Stamped under the lock, so time follows seq on one clock.
            event.time = timezone.now()
            event.seq = chain.head_seq + 1
            event.prev_mac = chain.head_mac
            keys = audit_keys()
            event.mac = compute_mac(keys.primary, event.prev_mac, event.canonical_fields())
            event.key_id = keys.current_id
            event.save(force_insert=True)
            AuditChain.objects.filter(pk=1).update(head_seq=event.seq, head_mac=event.mac)
    except DatabaseError as exc:
        context.write_failed = True
        logger.error("audit write failed for %s: %s", action, exc)
        raise AuditWriteError(action, exc) from exc
    context.events += 1
    transaction.on_commit(lambda: _emit(event))
    return event


# The same writer for async callers (middleware, consumers): the database work runs in a
# worker thread, not in the thread shared by sync views.
arecord_event = database_sync_to_async(record_event, thread_sensitive=False)


def do_note_export(actor: Actor, fmt: str, filters: Mapping[str, Any]) -> AuditEvent:
    """Reading the whole log out is itself worth a line in it."""
    with transaction.atomic():
        return record_event(
            "audit.exported", target=f"format:{fmt}", details={"filters": filters}, actor=actor
        )


@dataclass(frozen=True)
class PruneResult:
    pruned: int
    kept_from_seq: int
    event: AuditEvent | None


def do_prune(actor: Actor, before: datetime, *, dry_run: bool = False) -> PruneResult:
    """Delete events older than ``before`` and record what was pruned as an event.

    The kept chain stays verifiable: the anchor (first kept seq and the MAC before it) is
    stored on the chain row and repeated in the MAC-protected prune event.
    """
    with transaction.atomic():
        chain = _lock_chain()
        first_kept = (
            AuditEvent.objects.filter(time__gte=before)
            .order_by("seq")
            .values_list("seq", flat=True)
            .first()
        )
        kept_from = first_kept if first_kept is not None else chain.head_seq + 1
        kept_from = max(kept_from, chain.anchor_seq)
        doomed = AuditEvent.objects.filter(seq__lt=kept_from)
        count = doomed.count()
        if dry_run:
            return PruneResult(count, kept_from, None)
        last_pruned_mac = chain.anchor_mac
        if kept_from > chain.anchor_seq:
            last_pruned_mac = AuditEvent.objects.get(seq=kept_from - 1).mac
        doomed.delete()
        AuditChain.objects.filter(pk=1).update(anchor_seq=kept_from, anchor_mac=last_pruned_mac)
        event = record_event(
            PRUNE_ACTION,
            target=f"events before {before.isoformat(timespec='seconds')}",
            details={
                "events": count,
                "before": before.isoformat(),
                "kept_from_seq": kept_from,
                "last_pruned_mac": last_pruned_mac,
            },
            actor=actor,
        )
    return PruneResult(count, kept_from, event)
