"""Pure arithmetic over the nodes' answers: who leads, who lags, what the adapters did,
which routes match a filter.

No I/O and no Django here; the services feed these functions what the nodes said and
tests state each rule by name (tests/unit/test_cluster_aggregate.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# -- Raft groups ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupReport:
    """One node's view of one Raft group (a GetRaftGroups entry, tagged with the node)."""

    node: str
    raft_group_id: int
    leader: str  # "" while this node knows no leader
    term: int
    commit_index: int = 0
    applied_index: int = 0
    last_contact_unix_ms: int = 0  # 0 = unknown


@dataclass(frozen=True, slots=True)
class GroupConsensus:
    """What the nodes agree (or disagree) on about one group."""

    raft_group_id: int
    leader: str  # "" when no node names a leader
    term: int
    leader_disagreement: bool  # nodes name different leaders for that term
    term_disagreement: bool  # nodes report different terms
    reporters: int  # how many nodes reported the group

    @property
    def has_leader(self) -> bool:
        return bool(self.leader)

    @property
    def highlight(self) -> bool:
        """Worth an operator's look: no leader, or the nodes do not agree."""
        return not self.leader or self.leader_disagreement or self.term_disagreement


def group_consensus(raft_group_id: int, reports: Sequence[GroupReport]) -> GroupConsensus:
    """The leader of a group as the nodes report it.

    The leader is the one named at the highest term that names any leader (a node that
    campaigns alone keeps raising its term without a leader, and must not hide the real
    one). At that term a node naming itself wins (it knows); otherwise the most named one,
    ties to the smallest id. Raft allows one leader per term, so two names at one term,
    or differing terms, are flagged rather than resolved silently.
    """
    if not reports:
        return GroupConsensus(raft_group_id, "", 0, False, False, 0)
    named = [r for r in reports if r.leader]
    term_disagreement = len({r.term for r in reports}) > 1
    if not named:
        return GroupConsensus(
            raft_group_id, "", max(r.term for r in reports), False, term_disagreement, len(reports)
        )
    term = max(r.term for r in named)
    at_term = [r for r in named if r.term == term]
    names = Counter(r.leader for r in at_term)
    self_claims = sorted({r.leader for r in at_term if r.leader == r.node})
    most_named = min(names, key=lambda name: (-names[name], name))
    leader = self_claims[0] if self_claims else most_named
    return GroupConsensus(
        raft_group_id, leader, term, len(names) > 1, term_disagreement, len(reports)
    )


def consensus_by_group(reports: Iterable[GroupReport]) -> dict[int, GroupConsensus]:
    """``group_consensus`` for every group any node reported, by group id, in id order."""
    by_group: dict[int, list[GroupReport]] = {}
    for report in reports:
        by_group.setdefault(report.raft_group_id, []).append(report)
    return {gid: group_consensus(gid, by_group[gid]) for gid in sorted(by_group)}


def applied_lag(leader_applied: int | None, node_applied: int) -> int | None:
    """Entries the leader has applied that this node has not; None when the leader did not
    report. A node momentarily ahead of the leader's (slightly older) answer counts as 0."""
    if leader_applied is None:
        return None
    return max(0, leader_applied - node_applied)


def last_contact_age_ms(last_contact_unix_ms: int, now_ms: int) -> int | None:
    """Milliseconds since the node last heard from the leader; None for 0 ("unknown")."""
    if last_contact_unix_ms <= 0:
        return None
    return max(0, now_ms - last_contact_unix_ms)


def leaders_per_node(consensus: Iterable[GroupConsensus]) -> dict[str, int]:
    """How many groups each node leads (only nodes that lead something), by node."""
    counts = Counter(c.leader for c in consensus if c.leader)
    return dict(sorted(counts.items()))


# -- adapters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdapterSample:
    """One node's AdapterSummary entry."""

    node: str
    adapter: str
    operation: str
    requests: int
    in_flight: int
    bytes_in: int
    bytes_out: int
    p50_ns: float
    p95_ns: float
    p99_ns: float


@dataclass(frozen=True, slots=True)
class AdapterRow:
    """One (adapter, operation) across the cluster: counters summed; each node's own entry
    kept for its quantiles (quantiles of different nodes do not combine into one)."""

    adapter: str
    operation: str
    requests: int
    in_flight: int
    bytes_in: int
    bytes_out: int
    per_node: tuple[AdapterSample, ...] = field(default_factory=tuple)


def merge_adapter_summaries(samples: Iterable[AdapterSample]) -> list[AdapterRow]:
    """Sum requests, in-flight and bytes per (adapter, operation); keep each node's
    quantiles. Rows come in (adapter, operation) order, per-node entries in input order."""
    rows: dict[tuple[str, str], list[AdapterSample]] = {}
    for s in samples:
        rows.setdefault((s.adapter, s.operation), []).append(s)
    return [
        AdapterRow(
            adapter=adapter,
            operation=operation,
            requests=sum(s.requests for s in parts),
            in_flight=sum(s.in_flight for s in parts),
            bytes_in=sum(s.bytes_in for s in parts),
            bytes_out=sum(s.bytes_out for s in parts),
            per_node=tuple(parts),
        )
        for (adapter, operation), parts in sorted(rows.items())
    ]


# -- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A ListRoutes descriptor with its group's leader."""

    route_id: int
    start: bytes
    end: bytes  # b"" = +infinity
    raft_group_id: int
    state: str  # "active", "write_fenced", ...
    parent_route_id: int
    split_at_hlc: int
    leader: str = ""


ROUTE_SORT_KEYS = ("start", "route", "group", "leader", "state", "parent", "split_hlc")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (b"" = +infinity)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b""
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def route_covers_prefix(start: bytes, end: bytes, prefix: bytes) -> bool:
    """Whether [start, end) holds any key starting with ``prefix`` (empty end = +inf)."""
    if not prefix:
        return True
    upper = prefix_end(prefix)
    below_upper = not upper or start < upper
    above_prefix = not end or end > prefix
    return below_upper and above_prefix


def filter_routes(
    routes: Iterable[RouteEntry], *, group: int | None = None, prefix: bytes = b""
) -> list[RouteEntry]:
    """Routes of ``group`` (all when None) whose range holds keys starting with ``prefix``."""
    return [
        r
        for r in routes
        if (group is None or r.raft_group_id == group)
        and route_covers_prefix(r.start, r.end, prefix)
    ]


def _start_key(route: RouteEntry) -> tuple[bytes, int]:
    return (route.start, route.route_id)


_SORT_KEYS = {
    "start": _start_key,
    "route": lambda r: (r.route_id,),
    "group": lambda r: (r.raft_group_id, *_start_key(r)),
    "leader": lambda r: (r.leader, *_start_key(r)),
    "state": lambda r: (r.state, *_start_key(r)),
    "parent": lambda r: (r.parent_route_id, *_start_key(r)),
    "split_hlc": lambda r: (r.split_at_hlc, *_start_key(r)),
}


def sort_routes(
    routes: Iterable[RouteEntry], key: str = "start", *, descending: bool = False
) -> list[RouteEntry]:
    """Routes ordered by ``key`` (one of ROUTE_SORT_KEYS); ties in key order (start)."""
    if key not in _SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}")
    return sorted(routes, key=_SORT_KEYS[key], reverse=descending)
