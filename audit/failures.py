"""record_failure: record_event for failures anyone can repeat at will (bogus API tokens, wrong
passwords, denials), without letting them flood the chain (issue #13 item 10).

The first failure per (action, source address, actor, reason) is written at once, as an
ordinary event. Identical ones within the next ELASTICKV_ADMIN_AUDIT_FAILURE_WINDOW seconds
are only counted, in a FailureWindow row; when the window has passed, one summary event with
the same action carries the total: details ``{"count": N, "window_s": W, "first_seq": s,
...}`` (N includes the first failure, event #s). So each such key writes at most two events
per window however hard it is hammered, and no failure goes uncounted.

The count lives in the database, not in a per-process cache: every portal process folds
into the same row (one UPDATE per folded failure instead of a chained INSERT under the chain
lock). The summary is written by the next failure of any kind after the window closed, or
by ``manage.py audit_flush_failures``; until then the count waits in its row, so a summary
may lag by as long as the portal sees no other failure (run the command from the same timer
as audit_prune to bound that by the timer's period).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.context import AuditContext, audit_context, current, new_request_id
from audit.models import AuditEvent, FailureWindow, Outcome
from audit.service import record_event

# Expired windows summarized per sweep (the rest wait for the next one).
SWEEP_BATCH = 100
# A new row starts closed; whoever holds its lock opens it (and writes the first event).
_NEVER = datetime(2000, 1, 1, tzinfo=UTC)


def window_seconds() -> float:
    return float(settings.AUDIT_FAILURE_WINDOW)


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def record_failure(
    action: str,
    *,
    reason: str,
    target: str = "",
    outcome: str = Outcome.FAILURE,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent | None:
    """Record a failure, or count it into the open window of identical ones (returns None).

    ``reason`` says what makes two failures identical besides action, source and actor (a
    short server-made text, never a secret). Call it outside any transaction that already
    wrote an event: it locks its window row before the chain head.
    """
    context = current()
    window_s = window_seconds()
    if window_s <= 0 or context is None:
        return record_event(action, target=target, outcome=outcome, details=details)
    actor = context.actor or "anonymous"
    key = _key(action, context.source_ip, actor, reason)
    now = timezone.now()
    opened_after = now - timedelta(seconds=window_s)
    event: AuditEvent | None = None
    with transaction.atomic():
        # The common case, one statement: a window is open, count this failure into it.
        if _fold(key, opened_after, now, target):
            context.events += 1  # accounted for: the request middleware adds no http.* event
            return None
        row = _locked_window(key, action, context.source_ip, actor, reason, outcome, now)
        if row.opened > opened_after:  # another process opened it meanwhile
            _fold(key, opened_after, now, target)
            context.events += 1
            return None
        if row.failures > 1:
            _summarize(row, window_s)
        event = record_event(action, target=target, outcome=outcome, details=details)
        row.opened = row.last = now
        row.failures = 1
        row.first_seq = event.seq
        row.target = target[:300]
        row.save()
    flush_failure_windows(now)
    return event


arecord_failure = database_sync_to_async(record_failure, thread_sensitive=False)


def _locked_window(
    key: str, action: str, source_ip: str, actor: str, reason: str, outcome: str, now: datetime
) -> FailureWindow:
    """The key's row, locked; created (closed) if missing. Twice: a sweep in another process
    may delete the row while this one waits for its lock."""
    for _ in range(2):
        FailureWindow.objects.bulk_create(
            [
                FailureWindow(
                    key=key,
                    action=action,
                    source_ip=source_ip,
                    actor=actor[:150],
                    reason=reason[:300],
                    outcome=str(outcome),
                    opened=_NEVER,
                    last=now,
                )
            ],
            ignore_conflicts=True,
        )
        row = FailureWindow.objects.select_for_update().filter(key=key).first()
        if row is not None:
            return row
    raise FailureWindow.DoesNotExist(f"failure window {key} vanished twice")


def _fold(key: str, opened_after: datetime, now: datetime, target: str) -> bool:
    return bool(
        FailureWindow.objects.filter(key=key, opened__gt=opened_after).update(
            failures=F("failures") + 1, last=now, target=target[:300]
        )
    )


def _summarize(row: FailureWindow, window_s: float) -> AuditEvent:
    """The closed window's total, as its own event from the window's source and actor."""
    here = current()
    summary_context = AuditContext(
        request_id=here.request_id if here else new_request_id(),
        source_ip=row.source_ip,
        actor=row.actor,
    )
    with audit_context(summary_context):
        return record_event(
            row.action,
            target=row.target,
            outcome=row.outcome,
            details={
                "reason": row.reason,
                "count": row.failures,
                "window_s": window_s,
                "first_seq": row.first_seq,
                "from": row.opened.isoformat(),
                "to": row.last.isoformat(),
            },
        )


def flush_failure_windows(now: datetime | None = None, *, batch: int | None = SWEEP_BATCH) -> int:
    """Write the summary of every window closed by ``now`` that folded anything (at most
    ``batch`` windows, None: all), and drop the closed windows; returns the number of
    summaries written."""
    window_s = window_seconds()
    closed_by = (now or timezone.now()) - timedelta(seconds=max(window_s, 0))
    written = 0
    with transaction.atomic():
        rows = list(
            FailureWindow.objects.select_for_update(skip_locked=True)
            .filter(opened__lte=closed_by)
            .order_by("opened")[:batch]
        )
        for row in rows:
            if row.failures > 1:
                _summarize(row, window_s)
                written += 1
        FailureWindow.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return written
