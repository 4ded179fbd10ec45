"""The cluster timeline: events the collector observes as it polls the nodes.

The collector calls `EventObserver.observe` once a tick with what it already knows (the
nodes that joined or left the membership, each node's answering state, the newest Raft
leader overview with terms); the observer compares with the previous observation and
returns one Event per change, timed when it was seen:

- `leader_changed`: a group's leader or term differs from the previous overview (a
  group first seen is not a change); details {from, to, term};
- `node_joined` / `node_left`: membership changes;
- `node_down` / `node_up`: a node stops or starts answering the collector (details
  {error} for down).

The first observation is the baseline: a restarted collector does not record the whole
cluster again. `GET /api/events?from=&to=&type=` and the Events page read them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from elastickv_admin.errors import ParamError
from keyviz.models import Event
from keyviz.params import MAX_UNIX_MS

TYPES = ("leader_changed", "node_joined", "node_left", "node_down", "node_up")
MAX_EVENTS = 1000
DEFAULT_WINDOW_MS = 24 * 3_600_000
# Node-controlled strings are cut before they are stored.
_TEXT = 255


@dataclass(frozen=True)
class Observed:
    type: str
    unix_ms: int
    node_id: str = ""
    raft_group_id: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class EventObserver:
    """What the previous observation saw (in memory: the baseline after a start)."""

    nodes_ok: dict[str, bool] | None = None
    leaders: dict[int, tuple[str, int]] | None = None
    leaders_taken_ms: int = 0

    def observe(
        self,
        now_ms: int,
        *,
        joined: Sequence[str],
        left: Sequence[str],
        nodes_ok: Mapping[str, tuple[bool, str | None]],
        leaders: Mapping[int, tuple[str, int]],
        leaders_taken_ms: int,
    ) -> list[Observed]:
        out: list[Observed] = []
        if self.nodes_ok is not None:
            out += [Observed("node_joined", now_ms, node[:_TEXT]) for node in joined]
            out += [Observed("node_left", now_ms, node[:_TEXT]) for node in left]
            for node, (ok, error) in sorted(nodes_ok.items()):
                was = self.nodes_ok.get(node)
                if was is True and not ok:
                    detail = {"error": (error or "")[:_TEXT]}
                    out.append(Observed("node_down", now_ms, node[:_TEXT], details=detail))
                elif was is False and ok:
                    out.append(Observed("node_up", now_ms, node[:_TEXT]))
        self.nodes_ok = {n: ok for n, (ok, _) in nodes_ok.items()}
        if leaders_taken_ms and leaders_taken_ms != self.leaders_taken_ms:
            if self.leaders is not None:
                out += _leader_changes(self.leaders, leaders, leaders_taken_ms)
            self.leaders = dict(leaders)
            self.leaders_taken_ms = leaders_taken_ms
        return out


def _leader_changes(
    before: Mapping[int, tuple[str, int]], after: Mapping[int, tuple[str, int]], at_ms: int
) -> list[Observed]:
    out = []
    for group, (leader, term) in sorted(after.items()):
        old = before.get(group)
        if old is None or old == (leader, term) or not leader:
            continue  # new group, no change, or no leader named yet
        details = {"from": old[0][:_TEXT], "to": leader[:_TEXT], "term": term}
        out.append(Observed("leader_changed", at_ms, leader[:_TEXT], group, details))
    return out


def save(events: Sequence[Observed]) -> None:
    Event.objects.bulk_create(
        [
            Event(
                type=e.type,
                unix_ms=e.unix_ms,
                node_id=e.node_id,
                raft_group_id=e.raft_group_id,
                details=dict(e.details),
            )
            for e in events
        ]
    )


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    from_ms: int
    to_ms: int
    types: tuple[str, ...]


def _ms(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name) or ""
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15 or int(raw) > MAX_UNIX_MS:
        raise ParamError(name, f"must be milliseconds since the Unix epoch, got {raw[:40]!r}")
    return int(raw)


def parse_event_query(query: Mapping[str, str], *, now_ms: int) -> EventQuery:
    """`from`/`to` (Unix ms; default the last 24 h), `type` (comma-separated, of TYPES)."""
    end = _ms(query, "to")
    end = now_ms if end is None else end
    start = _ms(query, "from")
    start = max(0, end - DEFAULT_WINDOW_MS) if start is None else start
    if start >= end:
        raise ParamError("from", f"must be before to ({start} >= {end})")
    raw = query.get("type") or ""
    types = tuple(t for t in raw.split(",") if t) if raw else TYPES
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        raise ParamError(
            "type", f"unknown event type {unknown[0][:40]!r}; use one of {', '.join(TYPES)}"
        )
    return EventQuery(start, end, types)


def _selected(q: EventQuery) -> QuerySet[Event]:
    return Event.objects.filter(unix_ms__gte=q.from_ms, unix_ms__lt=q.to_ms, type__in=q.types)


def read_events(q: EventQuery) -> dict[str, Any]:
    """The newest MAX_EVENTS events of the window, newest first."""
    rows = list(_selected(q).order_by("-unix_ms", "-id")[: MAX_EVENTS + 1])
    return {
        "from_unix_ms": q.from_ms,
        "to_unix_ms": q.to_ms,
        "types": list(q.types),
        "truncated": len(rows) > MAX_EVENTS,
        "events": [
            {
                "type": e.type,
                "unix_ms": e.unix_ms,
                "node_id": e.node_id,
                "raft_group_id": int(e.raft_group_id),
                "details": e.details,
            }
            for e in rows[:MAX_EVENTS]
        ],
    }
