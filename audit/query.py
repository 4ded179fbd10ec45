"""The viewer's filters and keyset pagination (newest first), shared by the page and the
exports. Every filter maps onto an index that is walked in seq order, so the first page is
fast at millions of events. Free text matches the stored `search` column; on PostgreSQL a
trigram index on it (migration 0003) finds rare words without reading the table."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from channels.db import database_sync_to_async
from django.db.models import QuerySet, Value
from django.db.models.functions import Upper

from audit.models import AuditEvent, Outcome

PAGE_SIZE = 50
CLOCK_MARGIN = timedelta(hours=1)
CLOCK_MARGIN_EVENTS = 10_000
EXPORT_CHUNK = 2000
KNOWN_ACTIONS = (
    "login",
    "login.failed",
    "login.lockout",
    "logout",
    "mfa.enrolment_started",
    "mfa.enrolled",
    "mfa.failed",
    "mfa.removed",
    "permission.denied",
    "api_token.created",
    "api_token.used",
    "api_token.revoked",
    "api_token.rejected",
    "user.created",
    "user.roles_changed",
    "user.activated",
    "user.deactivated",
    "user.password_reset",
    "user.sessions_ended",
    "settings.changed",
    "audit.exported",
    "audit.pruned",
    "websocket.subscribe",
    "http.post",
)
CSV_COLUMNS = (
    "seq",
    "time",
    "actor",
    "source_ip",
    "user_agent",
    "request_id",
    "action",
    "target",
    "outcome",
    "details",
    "prev_mac",
    "mac",
)


class FilterError(ValueError):
    pass


# Filter bounds: the query adds CLOCK_MARGIN to `to`, and the database stores UTC, so a
# date at the edge of what datetime holds would overflow there (a 500) instead of here.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
MAX_SEQ = 2**63 - 1  # the database's integer
_SEQ = re.compile(r"[0-9]{1,19}")


def _when(raw: str, name: str) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    what = f"a date and time (YYYY-MM-DDTHH:MM, UTC) from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}"
    try:
        value = datetime.fromisoformat(raw)
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise FilterError(f"{name}: must be {what}") from None
    if not EARLIEST <= value <= LATEST:
        raise FilterError(f"{name}: must be {what}")
    return value


@dataclass(frozen=True)
class AuditFilters:
    start: datetime | None = None
    end: datetime | None = None
    actor: str = ""
    action: str = ""
    outcome: str = ""
    request_id: str = ""
    text: str = ""
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> AuditFilters:
        raw = {
            k: str(params.get(k, "")).strip()
            for k in ("from", "to", "actor", "action", "outcome", "request_id", "q")
        }
        outcome = raw["outcome"]
        if outcome and outcome not in Outcome.values:
            raise FilterError(f"outcome: one of {', '.join(Outcome.values)}")
        start, end = _when(raw["from"], "from"), _when(raw["to"], "to")
        if start and end and start >= end:
            raise FilterError("from must be before to")
        return cls(
            start=start,
            end=end,
            actor=raw["actor"],
            action=raw["action"],
            outcome=outcome,
            request_id=raw["request_id"],
            text=raw["q"][:200],
            raw={k: v for k, v in raw.items() if v},
        )

    @property
    def active(self) -> bool:
        return bool(self.raw)

    def queryset(self) -> QuerySet[AuditEvent]:
        qs = AuditEvent.objects.all()
        if self.start:
            qs = qs.filter(time__gte=self.start)
        if self.end:
            qs = qs.filter(time__lt=self.end)
            # Start the newest-first walk near `to` instead of at the head: the newest seq
            # stamped before to + a margin (clocks of several portal processes may differ a
            # little; seq order is the truth, time nearly follows it).
            bound = (
                AuditEvent.objects.filter(time__lt=self.end + CLOCK_MARGIN)
                .order_by("-time")
                .values_list("seq", flat=True)
                .first()
            )
            if bound is not None:
                qs = qs.filter(seq__lte=bound + CLOCK_MARGIN_EVENTS)
        if self.actor:
            qs = qs.filter(actor=self.actor)
        if self.action:
            if self.action.endswith("*"):
                qs = qs.filter(action__startswith=self.action.rstrip("*"))
            else:
                qs = qs.filter(action=self.action)
        if self.outcome:
            qs = qs.filter(outcome=self.outcome)
        if self.request_id:
            qs = qs.filter(request_id=self.request_id)
        if self.text:
            # Upper-cased by the database on both sides, as icontains would.
            qs = qs.filter(search__contains=Upper(Value(self.text)))
        return qs


@dataclass(frozen=True)
class Page:
    events: list[AuditEvent]
    older: int | None  # `before` cursor for the next (older) page
    newer: int | None  # `after` cursor for the previous (newer) page


def _cursor(raw: str, name: str) -> int | None:
    if not raw:
        return None
    if not _SEQ.fullmatch(raw) or int(raw) > MAX_SEQ:
        raise FilterError(f"{name}: must be an event number from 0 to {MAX_SEQ}")
    return int(raw)


def page(filters: AuditFilters, *, before: str = "", after: str = "") -> Page:
    qs = filters.queryset()
    before_seq, after_seq = _cursor(before, "before"), _cursor(after, "after")
    if after_seq is not None:
        rows = list(qs.filter(seq__gt=after_seq).order_by("seq")[: PAGE_SIZE + 1])
        more_newer = len(rows) > PAGE_SIZE
        events = list(reversed(rows[:PAGE_SIZE]))
        older = events[-1].seq if events and qs.filter(seq__lt=events[-1].seq).exists() else None
        return Page(events, older, events[0].seq if more_newer and events else None)
    qs_page = qs.filter(seq__lt=before_seq) if before_seq is not None else qs
    rows = list(qs_page.order_by("-seq")[: PAGE_SIZE + 1])
    events = rows[:PAGE_SIZE]
    older = events[-1].seq if len(rows) > PAGE_SIZE else None
    newer = None
    if before_seq is not None and events and qs.filter(seq__gt=events[0].seq).exists():
        newer = events[0].seq
    return Page(events, older, newer)


# --- exports: the whole filtered set, newest first, streamed in keyset chunks ----------------


def _chunks(filters: AuditFilters) -> Iterator[list[AuditEvent]]:
    qs = filters.queryset().order_by("-seq")
    last: int | None = None
    while True:
        chunk = list((qs.filter(seq__lt=last) if last is not None else qs)[:EXPORT_CHUNK])
        if not chunk:
            return
        yield chunk
        last = chunk[-1].seq


def _next_chunk(filters: AuditFilters, last: int | None) -> list[AuditEvent]:
    qs = filters.queryset().order_by("-seq")
    return list((qs.filter(seq__lt=last) if last is not None else qs)[:EXPORT_CHUNK])


def _safe_cell(value: str) -> str:
    # Spreadsheets run cells that start with these as formulas.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _row(event: AuditEvent) -> dict[str, str]:
    fields = event.canonical_fields()
    fields["prev_mac"] = event.prev_mac
    fields["mac"] = event.mac
    return {
        k: (json.dumps(v, sort_keys=True) if k == "details" else str(v)) for k, v in fields.items()
    }


def csv_header() -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(CSV_COLUMNS)
    return buffer.getvalue()


def csv_lines(events: list[AuditEvent]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for event in events:
        row = _row(event)
        writer.writerow([_safe_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


def jsonl_lines(events: list[AuditEvent]) -> str:
    lines = []
    for event in events:
        record = event.canonical_fields()
        record["prev_mac"] = event.prev_mac
        record["mac"] = event.mac
        lines.append(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
    return "".join(lines)


def export_sync(filters: AuditFilters, fmt: str) -> Iterator[str]:
    if fmt == "csv":
        yield csv_header()
    render = csv_lines if fmt == "csv" else jsonl_lines
    for chunk in _chunks(filters):
        yield render(chunk)


async def export_async(filters: AuditFilters, fmt: str) -> AsyncIterator[str]:
    """Under ASGI: each chunk is fetched in a worker thread; the response streams as it goes
    (a sync iterator would be buffered whole by Django's ASGI handler)."""
    if fmt == "csv":
        yield csv_header()
    render = csv_lines if fmt == "csv" else jsonl_lines
    fetch = database_sync_to_async(_next_chunk, thread_sensitive=False)
    last: int | None = None
    while True:
        chunk = await fetch(filters, last)
        if not chunk:
            return
        yield render(chunk)
        last = chunk[-1].seq
