"""The cluster timeline: events the collector observes as it polls the nodes.

The collector calls `EventObserver.observe` once a tick with what it already knows (the
nodes that joined or left the membership, each node's answering state, the newest Raft
leader overview with terms); the observer compares with the previous observation and
returns one Event per change, timed when it was seen:

- `leader_changed`: a group's leader or term differs from the previous overview (a
  group first seen is not a change); details {from, to, term};
- `route_split` / `route_merged` / `route_moved`: the route catalog (ListRoutes, asked
  as often as the leaders) has a new `catalog_version` and a route was replaced by two or
  more inside its range, two or more by one covering them, or a route now lives in
  another Raft group; details {route_id, into | from | from_group, to_group, version}.
  Where a node streams its RouteTransitions (StreamEvents), a transition makes the
  catalog due at once and the split or merge is timed when the node made it;
- `node_joined` / `node_left`: membership changes;
- `node_down` / `node_up`: a node stops or starts answering the collector (details
  {error} for down);
- `keyviz_disabled` / `keyviz_enabled`: a node answers, but GetKeyVizMatrix says its
  sampler is off (UNAVAILABLE from a reachable node, CONTRACT.md), or answers again. The
  last known KeyViz state outlives a node_down, so a node restarted without its sampler is
  node_up then keyviz_disabled;
- `node_token_rotation`: a step of a node token rotation (started, finished, cancelled),
  read from the audit log when the timeline is read (details {action, actor}; never the
  audit details, which carry fingerprints).

The first observation is the baseline: a restarted collector does not record the whole
cluster again. `GET /api/events?from=&to=&type=&node=&group=` and the Events page read them back.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet

from cluster.aggregate import RouteEntry
from cluster.diagnose import cause_of
from cluster.fanout import Node, call_node
from cluster.runtime import node_client
from cluster.services import routes_of
from elastickv_admin.lib.errors import ParamError
from keyviz import intake
from keyviz.models import Event
from keyviz.params import MAX_UNIX_MS

TYPES = (
    "leader_changed",
    "route_split",
    "route_merged",
    "route_moved",
    "node_joined",
    "node_left",
    "node_down",
    "node_up",
    "keyviz_disabled",
    "keyviz_enabled",
    "node_token_rotation",
)
# Read from the audit log, not observed by the collector (the portal itself rotates).
ROTATION_ACTIONS = (
    "node_token.rotation_started",
    "node_token.rotation_finished",
    "node_token.rotation_cancelled",
)
MAX_EVENTS = 1000
# The cell drawer lists the events within this many steps either side of the cell.
CELL_STEPS = 3
DEFAULT_WINDOW_MS = 24 * 3_600_000
# Node-controlled strings are cut before they are stored.
_TEXT = 255
# Route ids whose transition time is remembered until the catalog shows the change.
_TRANSITION_TIMES = 256


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
    # Last known KeyViz state of each node (True: its sampler answers), kept while it is down.
    keyviz_on: dict[str, bool] = field(default_factory=dict)
    leaders: dict[int, tuple[str, int]] | None = None
    leaders_taken_ms: int = 0
    catalog: tuple[int, tuple[RouteEntry, ...]] | None = None
    _catalog_due: float = 0.0
    # Route id (a split's parent, a merge's child) -> when a node said it changed.
    route_ms: dict[int, int] = field(default_factory=dict)

    def transitions(self, pushed: Sequence[tuple[int, Sequence[int], int]]) -> None:
        """Route transitions a node streamed (parent, children, unix_ms): the catalog is
        asked on the next observation, and the change is timed when the node made it."""
        for parent, children, unix_ms in pushed:
            if unix_ms <= 0 or unix_ms > MAX_UNIX_MS:
                continue  # node-controlled: a time the timeline cannot hold is not used
            self.route_ms[int(parent)] = int(unix_ms)
            if len(children) == 1:
                self.route_ms[int(children[0])] = int(unix_ms)  # one parent of a merge
            self._catalog_due = 0.0
        while len(self.route_ms) > _TRANSITION_TIMES:
            del self.route_ms[next(iter(self.route_ms))]

    async def catalog_if_due(self, nodes: Sequence[Node]) -> tuple[int, list[RouteEntry]] | None:
        """ListRoutes from the first of `nodes` that answers, as often as the leaders are
        asked; None when not due or no node answered."""
        if time.monotonic() < self._catalog_due:
            return None
        self._catalog_due = time.monotonic() + intake.LEADERS_EVERY_S
        client = node_client()
        for node in nodes:
            got, _ = await call_node(client, node, "ListRoutes", validate=_catalog_of)
            if got is not None:
                return got
        return None

    def _keyviz_changes(
        self, now_ms: int, nodes_ok: Mapping[str, tuple[bool, str | None]], off: Collection[str]
    ) -> list[Observed]:
        """keyviz_disabled / keyviz_enabled of nodes that answer now (a down node's state
        is unknown: its last known one is kept)."""
        out: list[Observed] = []
        for node, (ok, _) in sorted(nodes_ok.items()):
            if not ok:
                continue
            on = node not in off
            was = self.keyviz_on.get(node)
            self.keyviz_on[node] = on
            if was is None or was == on or self.nodes_ok is None:
                continue
            out.append(
                Observed("keyviz_enabled" if on else "keyviz_disabled", now_ms, node[:_TEXT])
            )
        for node in [n for n in self.keyviz_on if n not in nodes_ok]:
            del self.keyviz_on[node]  # left the membership
        return out

    def observe(
        self,
        now_ms: int,
        *,
        joined: Sequence[str],
        left: Sequence[str],
        nodes_ok: Mapping[str, tuple[bool, str | None]],
        leaders: Mapping[int, tuple[str, int]],
        leaders_taken_ms: int,
        catalog: tuple[int, Sequence[RouteEntry]] | None = None,
        keyviz_off: Collection[str] = (),
    ) -> list[Observed]:
        """`nodes_ok`: node -> (answers, error); a node in `keyviz_off` answers (ok) but
        runs without its KeyViz sampler."""
        out: list[Observed] = []
        if catalog is not None:
            version, routes = catalog
            if self.catalog is not None and version != self.catalog[0]:
                out += catalog_changes(self.catalog[1], routes, now_ms, version, self.route_ms)
            self.catalog = (version, tuple(routes))
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
        out += self._keyviz_changes(now_ms, nodes_ok, keyviz_off)
        self.nodes_ok = {n: ok for n, (ok, _) in nodes_ok.items()}
        if leaders_taken_ms and leaders_taken_ms != self.leaders_taken_ms:
            if self.leaders is not None:
                out += _leader_changes(self.leaders, leaders, leaders_taken_ms)
            self.leaders = dict(leaders)
            self.leaders_taken_ms = leaders_taken_ms
        return out


def keyviz_off(code: str | None, reachable: bool | None) -> bool:
    """Whether a node's failed GetKeyVizMatrix means it answers with its sampler off (the
    node client's structured status, cluster/client.py NodeError; cluster/diagnose.py
    reads it)."""
    return cause_of(code, reachable, keyviz=True).key == "keyviz_off"


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


def _catalog_of(response: Any) -> tuple[int, list[RouteEntry]]:
    return int(response.catalog_version), routes_of(response)


def _within(inner: RouteEntry, outer: RouteEntry) -> bool:
    """Whether inner's key range lies inside outer's (b"" end = +infinity)."""
    if inner.start < outer.start:
        return False
    return not outer.end or (bool(inner.end) and inner.end <= outer.end)


def catalog_changes(
    before: Sequence[RouteEntry],
    after: Sequence[RouteEntry],
    at_ms: int,
    version: int,
    route_ms: dict[int, int] | None = None,
) -> list[Observed]:
    """Splits, merges and moves between two route catalogs (one event per change), timed
    `at_ms` unless `route_ms` has the node's transition time (taken out once used)."""
    times = route_ms if route_ms is not None else {}
    old = {r.route_id: r for r in before}
    new = {r.route_id: r for r in after}
    removed = [r for i, r in sorted(old.items()) if i not in new]
    added = [r for i, r in sorted(new.items()) if i not in old]
    out: list[Observed] = []
    for r in removed:
        into = [a.route_id for a in added if _within(a, r)]
        if len(into) >= 2:
            details = {"route_id": r.route_id, "into": into, "version": version}
            when = times.pop(r.route_id, at_ms)
            out.append(Observed("route_split", when, "", r.raft_group_id, details))
    for a in added:
        parts = [r.route_id for r in removed if _within(r, a)]
        if len(parts) >= 2:
            details = {"route_id": a.route_id, "from": parts, "version": version}
            when = times.pop(a.route_id, at_ms)
            for p in parts:
                times.pop(p, None)
            out.append(Observed("route_merged", when, "", a.raft_group_id, details))
    for i, r in sorted(new.items()):
        was = old.get(i)
        if was is not None and was.raft_group_id != r.raft_group_id:
            details = {
                "route_id": i,
                "from_group": was.raft_group_id,
                "to_group": r.raft_group_id,
                "version": version,
            }
            out.append(Observed("route_moved", at_ms, "", r.raft_group_id, details))
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


def to_json(e: Observed) -> dict[str, Any]:
    """One event as `GET /api/events` and the live stream's `event` message give it."""
    return {
        "type": e.type,
        "unix_ms": e.unix_ms,
        "node_id": e.node_id,
        "raft_group_id": int(e.raft_group_id),
        "details": dict(e.details),
    }


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    from_ms: int
    to_ms: int
    types: tuple[str, ...]
    node: str = ""  # only this node's events ("" any)
    group: int | None = None  # only this Raft group's events


def _ms(query: Mapping[str, str], name: str) -> int | None:
    """Unix milliseconds, or a date and time in UTC (YYYY-MM-DDTHH:MM[:SS], or with its
    offset) as the Events page's inputs send it."""
    raw = (query.get(name) or "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():
        if len(raw) <= 15 and int(raw) <= MAX_UNIX_MS:
            return int(raw)
    else:
        try:
            when = datetime.fromisoformat(raw)
            when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
            ms = int(when.timestamp() * 1000)
        except (ValueError, OverflowError):
            ms = -1
        if 0 <= ms <= MAX_UNIX_MS:
            return ms
    raise ParamError(
        name,
        "must be milliseconds since the Unix epoch or a UTC date and time "
        f"(YYYY-MM-DDTHH:MM), got {raw[:40]!r}",
    )


def utc_input(raw: str) -> str:
    """A from/to value as the page's datetime-local input shows it (UTC); "" when it is
    not a time (the page shows the error instead)."""
    try:
        ms = _ms({"v": raw}, "v")
    except ParamError:
        return ""
    return (
        "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )


def parse_event_query(query: Mapping[str, str], *, now_ms: int) -> EventQuery:
    """`from`/`to` (Unix ms or a UTC date and time; default the last 24 h), `type`
    (comma-separated, of TYPES), `node` (a node id), `group` (a Raft group id)."""
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
    node = query.get("node") or ""
    if len(node) > _TEXT:
        raise ParamError("node", f"must be a node id of at most {_TEXT} characters")
    raw_group = query.get("group") or ""
    group = None
    if raw_group:
        if not raw_group.isascii() or not raw_group.isdigit() or len(raw_group) > 20:
            raise ParamError(
                "group", f"must be a Raft group id (a whole number), got {raw_group[:40]!r}"
            )
        group = int(raw_group)
    return EventQuery(start, end, types, node, group)


def _selected(q: EventQuery) -> QuerySet[Event]:
    rows = Event.objects.filter(unix_ms__gte=q.from_ms, unix_ms__lt=q.to_ms, type__in=q.types)
    if q.node:
        rows = rows.filter(node_id=q.node)
    if q.group is not None:
        rows = rows.filter(raft_group_id=q.group)
    return rows


def _rotations(q: EventQuery) -> list[dict[str, Any]]:
    from audit.models import AuditEvent, Outcome

    if "node_token_rotation" not in q.types or q.node or q.group is not None:
        return []  # a rotation names no node or group
    rows = AuditEvent.objects.filter(
        action__in=ROTATION_ACTIONS,
        outcome=Outcome.SUCCESS,
        time__gte=datetime.fromtimestamp(q.from_ms / 1000, UTC),
        time__lt=datetime.fromtimestamp(q.to_ms / 1000, UTC),
    ).order_by("-time", "-seq")[: MAX_EVENTS + 1]
    return [
        {
            "type": "node_token_rotation",
            "unix_ms": int(a.time.timestamp() * 1000),
            "node_id": "",
            "raft_group_id": 0,
            "details": {"action": a.action.removeprefix("node_token."), "actor": a.actor},
        }
        for a in rows
    ]


def read_events(q: EventQuery) -> dict[str, Any]:
    """The newest MAX_EVENTS events of the window, newest first."""
    rows = list(_selected(q).order_by("-unix_ms", "-id")[: MAX_EVENTS + 1])
    found = [
        to_json(Observed(e.type, e.unix_ms, e.node_id, int(e.raft_group_id), e.details))
        for e in rows
    ]
    found += _rotations(q)
    found.sort(key=lambda e: -int(e["unix_ms"]))
    return {
        "from_unix_ms": q.from_ms,
        "to_unix_ms": q.to_ms,
        "types": list(q.types),
        "truncated": len(found) > MAX_EVENTS,
        "events": found[:MAX_EVENTS],
    }


def parse_cell_at(query: Mapping[str, str]) -> int | None:
    """`at` of a cell detail: the clicked cell's column time (Unix ms), if given."""
    return _ms(query, "at")


def cell_window(at_ms: int | None, step_ms: int, from_ms: int, to_ms: int) -> EventQuery:
    """The events of a cell detail (GET /api/keyviz/buckets/<id>): within CELL_STEPS steps
    either side of the cell whose column ends at `at_ms`, or of the whole from/to window
    when no cell is named. Every type."""
    if at_ms is None:
        return EventQuery(from_ms, to_ms, TYPES)
    # The cell's column covers (at - step, at]: CELL_STEPS more steps on each side.
    start = max(0, at_ms - (CELL_STEPS + 1) * step_ms)
    return EventQuery(start, at_ms + CELL_STEPS * step_ms + 1, TYPES)
