"""What the cluster pages and the JSON API show, fetched from the nodes and aggregated.

Plain async functions without a Django request, returning dataclasses: the views, the
tests and the benchmark call the same code. Every page starts from the cluster's health:
membership from discovery plus one GetRaftGroups fan-out, which says per node whether it
answers (with latency or the reason it did not) and how it sees every Raft group.
GetClusterOverview stays with discovery, so page loads never multiply the calls a seed
gets (one per refresh interval, however many viewers).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from asgiref.sync import sync_to_async

from cluster.aggregate import (
    AdapterRow,
    AdapterSample,
    GroupConsensus,
    GroupReport,
    RouteEntry,
    applied_lag,
    consensus_by_group,
    filter_routes,
    last_contact_age_ms,
    leaders_per_node,
    merge_adapter_summaries,
    sort_routes,
)
from cluster.client import UNAVAILABLE_TTL_S, NodeClient
from cluster.diagnose import Problem, group_failures
from cluster.discovery import Membership
from cluster.fanout import (
    WAITING,
    MalformedResponse,
    Node,
    NodeStatus,
    NodeStatusSummary,
    PageBudget,
    call_node,
    fan_out,
)
from cluster.flight import SingleFlight
from cluster.history import Progress
from cluster.params import RouteQuery
from cluster.probes import PROBE_DEADLINE_S, NodeSupport
from cluster.runtime import discovery, node_client, runtime
from elastickv_admin.lib import metrics
from keyviz.keys import KeyPreview, key_preview
from proto import admin_pb2, distribution_pb2

HEALTH_METHOD = "GetRaftGroups"
ADMIN_NOT_SERVED = (
    "the node does not serve the Admin service (GetRaftGroups is UNIMPLEMENTED): "
    "was it started without --adminTokenFile or --adminInsecureNoAuth?"
)
ROUTE_STATES = {
    distribution_pb2.ROUTE_STATE_UNSPECIFIED: "unspecified",
    distribution_pb2.ROUTE_STATE_ACTIVE: "active",
    distribution_pb2.ROUTE_STATE_WRITE_FENCED: "write_fenced",
    distribution_pb2.ROUTE_STATE_MIGRATING_SOURCE: "migrating_source",
    distribution_pb2.ROUTE_STATE_MIGRATING_TARGET: "migrating_target",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- health: membership + GetRaftGroups on every node ------------------------------------------


def raft_groups_of(
    response: admin_pb2.GetRaftGroupsResponse,
) -> tuple[admin_pb2.RaftGroupState, ...]:
    """A GetRaftGroups answer, checked: every group once, none with id 0."""
    seen: set[int] = set()
    for group in response.groups:
        if group.raft_group_id == 0:
            raise MalformedResponse("GetRaftGroups lists a group with id 0")
        if group.raft_group_id in seen:
            raise MalformedResponse(f"GetRaftGroups lists group {group.raft_group_id} twice")
        seen.add(group.raft_group_id)
    return tuple(response.groups)


def _explain(status: NodeStatus) -> NodeStatus:
    """Health failures worded for an operator: UNIMPLEMENTED on GetRaftGroups, which every
    elastickv version serves, means the Admin service is not registered at all."""
    if status.code == "UNIMPLEMENTED":
        return replace(status, error=ADMIN_NOT_SERVED)
    return status


@dataclass(frozen=True)
class ClusterHealth(NodeStatusSummary):
    membership: Membership
    statuses: tuple[NodeStatus, ...]  # one per node, in membership order
    groups: dict[str, tuple[admin_pb2.RaftGroupState, ...]]  # by address, answering nodes
    consensus: dict[int, GroupConsensus]  # by group id, in id order
    now_ms: int
    # The last answer of each node that did not answer now: (groups, when), by address.
    stale_groups: dict[str, tuple[tuple[admin_pb2.RaftGroupState, ...], int]] = field(
        default_factory=dict
    )
    budget_s: float = 0.0
    slow_node_s: float = 0.0

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.membership.nodes

    def page_budget(self) -> PageBudget:
        """The page's budget for a further fan-out: nodes the health check found slow, or
        is still waiting for, are not asked (their call would hold the page)."""
        skip = {s.address: s.state for s in self.statuses if s.state in ("slow", "waiting")}
        return PageBudget(self.budget_s, {a: str(why) for a, why in skip.items()})

    def status_of(self, address: str) -> NodeStatus | None:
        for status in self.statuses:
            if status.address == address:
                return status
        return None

    @property
    def problems(self) -> list[Problem]:
        """The failures grouped by cause, each with its next step (shown once a page)."""
        seeds = self.membership.seed_errors if not self.membership.source else None
        return group_failures(self.statuses, seeds)

    @property
    def seed_problems(self) -> list[Problem]:
        """Seeds that did not answer while another did (not members: not node failures)."""
        if not self.membership.source:
            return []
        return group_failures((), self.membership.seed_errors)

    def reports(self) -> list[GroupReport]:
        return _reports(self.nodes, self.groups)

    def stale_reports(self) -> list[GroupReport]:
        return _reports(self.nodes, {a: g for a, (g, _) in self.stale_groups.items()})


def _reports(
    nodes: Iterable[Node], groups: dict[str, tuple[admin_pb2.RaftGroupState, ...]]
) -> list[GroupReport]:
    out = []
    for node in nodes:
        for g in groups.get(node.address, ()):
            out.append(
                GroupReport(
                    node=node.label,
                    raft_group_id=g.raft_group_id,
                    leader=g.leader_node_id,
                    term=g.leader_term,
                    commit_index=g.commit_index,
                    applied_index=g.applied_index,
                    last_contact_unix_ms=g.last_contact_unix_ms,
                )
            )
    return out


Groups = tuple[admin_pb2.RaftGroupState, ...]
# How long a slow node's last answer stands in for it while its next one is awaited.
SLOW_ANSWER_TTL_S = 120.0


@dataclass(frozen=True)
class _Answer:
    """A node's last completed health call."""

    groups: Groups | None  # None: it failed
    status: NodeStatus
    at_ms: int


class _HealthFetch:
    """Concurrent callers on one event loop share one in-flight health fetch (no caching
    beyond it: the answer is as fresh as the call everyone waited for).

    A fetch waits for the nodes only up to the page budget: each node's call runs on in
    the background (one per node at a time), and what it brings is kept for the next page
    (bounded by the client's capacity): a slow node shows with its last data, marked slow;
    a node not heard from yet is "waiting"; a dead node keeps its last-known groups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flight: SingleFlight[ClusterHealth] = SingleFlight()
        # One health call per node at a time; a slow one runs on past the page.
        self._calls: SingleFlight[tuple[Groups | None, NodeStatus]] = SingleFlight()
        self._last: OrderedDict[str, _Answer] = OrderedDict()  # by address
        self._seen: OrderedDict[str, _Answer] = OrderedDict()  # last successful, by address
        # When each address last made us drop the membership cache.
        self._invalidated: dict[str, float] = {}

    async def health(self) -> ClusterHealth:
        return await self._flight.run("health", self._fetch)

    async def _membership(self, budget_s: float) -> Membership:
        """The membership, waiting for a refresh only up to the budget when an older one
        is at hand."""
        refresh = asyncio.ensure_future(discovery().membership())
        held = discovery().last()
        if held is None:
            return await refresh
        done, _ = await asyncio.wait({refresh}, timeout=budget_s)
        return refresh.result() if done else held

    async def _call(self, client: NodeClient, node: Node) -> tuple[Groups | None, NodeStatus]:
        groups, status = await call_node(client, node, HEALTH_METHOD, validate=raft_groups_of)
        answer = _Answer(groups, status, _now_ms())
        with self._lock:
            _remember(self._last, node.address, answer, client.capacity)
            if groups is not None:
                _remember(self._seen, node.address, answer, client.capacity)
        return groups, status

    async def _fetch(self) -> ClusterHealth:
        client = node_client()
        config = client.config
        budget = config.page_budget_s
        membership = await self._membership(budget)
        addresses = {n.address for n in membership.nodes}
        tasks = [
            self._calls.task(node.address, partial(self._call, client, node))
            for node in membership.nodes
        ]
        with self._lock:
            for gone in [a for a in self._last if a not in addresses]:
                del self._last[gone]
            for gone in [a for a in self._seen if a not in addresses]:
                del self._seen[gone]
        if tasks:
            started = time.perf_counter()
            await asyncio.wait(tasks, timeout=budget)
            # What the page waited for the fan-out (at most the budget).
            metrics.FANOUT_SECONDS.labels(HEALTH_METHOD).observe(time.perf_counter() - started)
        now = _now_ms()
        statuses: list[NodeStatus] = []
        groups: dict[str, Groups] = {}
        stale: dict[str, tuple[Groups, int]] = {}
        fresh: list[NodeStatus] = []
        for node, task in zip(membership.nodes, tasks, strict=True):
            with self._lock:
                last = self._last.get(node.address)
                seen = self._seen.get(node.address)
            last_seen = seen.at_ms if seen else None
            if task.done():
                answer, status = task.result()
                fresh.append(status)
                status = _explain(status)
                if answer is not None:
                    groups[node.address] = answer
                    status = replace(
                        status, state=_speed(status, config.slow_node_s), last_seen_ms=now
                    )
                else:
                    status = replace(status, state="down", last_seen_ms=last_seen)
            elif (
                last is not None
                and last.groups is not None
                and _speed(last.status, config.slow_node_s) == "slow"
                and now - last.at_ms <= SLOW_ANSWER_TTL_S * 1000
            ):
                # Still slow: its previous answer stands, marked with its age.
                groups[node.address] = last.groups
                status = replace(
                    last.status,
                    node=node.label,
                    state="slow",
                    last_seen_ms=last_seen,
                    as_of_ms=last.at_ms,
                )
            else:
                status = NodeStatus(
                    node.label,
                    node.address,
                    False,
                    f"no answer within the page's {budget:g} s budget yet; "
                    "the page fills it in when it comes",
                    None,
                    WAITING,
                    state="waiting",
                    last_seen_ms=last_seen,
                )
            if node.address not in groups and seen is not None and seen.groups is not None:
                stale[node.address] = (seen.groups, seen.at_ms)
            statuses.append(status)
        self._maybe_invalidate(fresh)
        health = ClusterHealth(
            membership,
            tuple(statuses),
            groups,
            {},
            now,
            stale,
            budget,
            config.slow_node_s,
        )
        health = replace(health, consensus=consensus_by_group(health.reports()))
        _record_progress(health)
        return health

    def _maybe_invalidate(self, statuses: Iterable[NodeStatus]) -> None:
        # A node that went UNAVAILABLE may have left or moved: ask a seed again, but at most
        # once per node while the client still remembers that node as unavailable.
        now = time.monotonic()
        with self._lock:  # only the last TTL matters: churning addresses do not pile up
            for stale in [a for a, t in self._invalidated.items() if now - t >= UNAVAILABLE_TTL_S]:
                del self._invalidated[stale]
        for status in statuses:
            if status.code != "UNAVAILABLE":
                continue
            with self._lock:
                last = self._invalidated.get(status.address)
                if last is not None and now - last < UNAVAILABLE_TTL_S:
                    continue
                self._invalidated[status.address] = now
            discovery().invalidate()


def _remember(into: OrderedDict[str, _Answer], address: str, answer: _Answer, cap: int) -> None:
    into.pop(address, None)
    into[address] = answer
    while len(into) > cap:
        into.popitem(last=False)


def _speed(status: NodeStatus, slow_node_s: float) -> str:
    latency = status.latency_ms or 0.0
    return "slow" if latency > slow_node_s * 1000 else "up"


def _record_progress(health: ClusterHealth) -> None:
    """One sample per replica that answered now, with its lag behind the group's leader."""
    if not any(s.as_of_ms is None and s.ok for s in health.statuses):
        return
    fresh = {s.address for s in health.statuses if s.ok and s.as_of_ms is None}
    leader_applied: dict[int, int] = {}
    reports = health.reports()
    for r in reports:
        c = health.consensus.get(r.raft_group_id)
        if c is not None and c.leader and r.node == c.leader:
            leader_applied[r.raft_group_id] = r.applied_index
    address = {n.label: n.address for n in health.nodes}
    runtime().raft_history.record(
        health.now_ms,
        (
            (
                r.node,
                r.raft_group_id,
                r.commit_index,
                r.applied_index,
                applied_lag(leader_applied.get(r.raft_group_id), r.applied_index),
            )
            for r in reports
            if address.get(r.node) in fresh
        ),
    )


async def cluster_health() -> ClusterHealth:
    return await runtime().shared("cluster.health", _HealthFetch).health()


# -- nodes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    node: Node
    status: NodeStatus
    groups_reported: int | None  # None when the node did not answer
    groups_led: int
    support: NodeSupport | None  # None when not probed (the node did not answer)

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def label(self) -> str:
        return self.node.label


async def _supports(
    client: NodeClient, health: ClusterHealth, addresses: Sequence[str] | None = None
) -> dict[str, NodeSupport]:
    """What each answering node serves: probed for nodes that answered now (up to the page
    budget; a probe still running fills in later), remembered for slow ones."""
    answering = [s.address for s in health.statuses if s.ok]
    if addresses is not None:
        answering = [a for a in answering if a in addresses]
    cache = runtime().support
    fast = [a for a in answering if (st := health.status_of(a)) is not None and st.as_of_ms is None]
    deadline = min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)
    probing = asyncio.ensure_future(cache.support_of(client, fast, deadline))
    done, _ = await asyncio.wait({probing}, timeout=max(health.budget_s, 0.05))
    found = dict(probing.result()) if done else {}
    for address in answering:
        if address not in found and (held := cache.cached(client, address)) is not None:
            found[address] = held
    return found


def node_rows(health: ClusterHealth, supports: dict[str, NodeSupport]) -> list[NodeRow]:
    led = leaders_per_node(health.consensus.values())
    rows = []
    for node, status in zip(health.nodes, health.statuses, strict=True):
        groups = health.groups.get(node.address)
        rows.append(
            NodeRow(
                node=node,
                status=status,
                groups_reported=len(groups) if groups is not None else None,
                groups_led=led.get(node.label, 0),
                support=supports.get(node.address),
            )
        )
    return rows


@dataclass(frozen=True)
class NodesView:
    health: ClusterHealth
    nodes: list[NodeRow]


async def list_nodes() -> NodesView:
    client = node_client()
    health = await cluster_health()
    supports = await _supports(client, health)
    return NodesView(health, node_rows(health, supports))


@dataclass(frozen=True)
class NodeGroupView:
    """One group as one node sees it, beside what the cluster agrees on."""

    state: admin_pb2.RaftGroupState
    consensus: GroupConsensus | None
    last_contact_age_ms: int | None

    @property
    def agrees(self) -> bool:
        c = self.consensus
        return c is not None and (c.leader, c.term) == (
            self.state.leader_node_id,
            self.state.leader_term,
        )


@dataclass(frozen=True)
class NodeDetail:
    health: ClusterHealth
    row: NodeRow
    groups: list[NodeGroupView]


def find_node(health: ClusterHealth, key: str) -> Node | None:
    """A member by node id, else by address."""
    for node in health.nodes:
        if node.node_id and node.node_id == key:
            return node
    for node in health.nodes:
        if node.address == key:
            return node
    return None


async def node_detail(key: str) -> NodeDetail | None:
    """One node's row and its own view of the groups; None when ``key`` names no member."""
    client = node_client()
    health = await cluster_health()
    node = find_node(health, key)
    if node is None:
        return None
    supports = await _supports(client, health, [node.address])
    row = next(r for r in node_rows(health, supports) if r.node == node)
    views = [
        NodeGroupView(
            g,
            health.consensus.get(g.raft_group_id),
            last_contact_age_ms(g.last_contact_unix_ms, health.now_ms),
        )
        for g in health.groups.get(node.address, ())
    ]
    return NodeDetail(health, row, views)


# -- catalog ----------------------------------------------------------------------------------


def routes_of(response: distribution_pb2.ListRoutesResponse) -> list[RouteEntry]:
    """A ListRoutes answer, checked: unique route ids, every range non-empty."""
    seen: set[int] = set()
    out = []
    for r in response.routes:
        if r.route_id in seen:
            raise MalformedResponse(f"ListRoutes lists route {r.route_id} twice")
        seen.add(r.route_id)
        if r.end and r.end <= r.start:
            raise MalformedResponse(f"ListRoutes route {r.route_id} ends before it starts")
        out.append(
            RouteEntry(
                route_id=r.route_id,
                start=r.start,
                end=r.end,
                raft_group_id=r.raft_group_id,
                state=ROUTE_STATES.get(r.state, f"state_{r.state}"),
                parent_route_id=r.parent_route_id,
                split_at_hlc=r.split_at_hlc,
            )
        )
    return out


@dataclass(frozen=True)
class Catalog:
    version: int | None  # None when no node answered
    routes: tuple[RouteEntry, ...]
    source: Node | None
    errors: tuple[NodeStatus, ...] = ()  # the nodes asked before one answered

    @property
    def error(self) -> str | None:
        if self.source is not None:
            return None
        if not self.errors:
            return "no node to ask"
        # Causes only (the nodes' own words are in the page's failure banner, once).
        return "no node answered ListRoutes: " + "; ".join(
            f"{p.cause.cause} ({', '.join(a.node for a in p.nodes)})"
            for p in group_failures(self.errors)
        )


async def fetch_catalog(client: NodeClient, health: ClusterHealth) -> Catalog:
    """ListRoutes from the first node that answers: nodes that answered the health check
    promptly first, then slow ones (a slow or dead node would cost a deadline), then the
    rest, in membership order."""
    rank = {s.address: (not s.ok, s.state == "slow") for s in health.statuses}
    ordered = sorted(health.nodes, key=lambda n: rank.get(n.address, (True, False)))
    errors: list[NodeStatus] = []
    for node in ordered:
        routes, status = await call_node(client, node, "ListRoutes", validate=_catalog_of)
        if routes is not None:
            version, entries = routes
            leaders = {gid: c.leader for gid, c in health.consensus.items()}
            with_leaders = tuple(
                replace(r, leader=leaders.get(r.raft_group_id, "")) for r in entries
            )
            return Catalog(version, with_leaders, node, tuple(errors))
        errors.append(status)
    return Catalog(None, (), None, tuple(errors))


def _catalog_of(response: distribution_pb2.ListRoutesResponse) -> tuple[int, list[RouteEntry]]:
    return response.catalog_version, routes_of(response)


# -- overview ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewSummary:
    nodes_up: int
    nodes_total: int
    groups: int
    groups_with_leader: int
    leaders: dict[str, int]  # groups led, by node
    routes: int | None
    catalog_version: int | None


# The Overview's traffic figure: the newest stored KeyViz columns, summed over the rows.
TRAFFIC_COLUMNS = 12
# A node leads "too many" groups above this share of a fair split, and by at least
# LEADER_EXCESS_MIN groups (a 3-group cluster is never "unbalanced" by one group).
LEADER_SHARE_LIMIT = 1.5
LEADER_EXCESS_MIN = 2


@dataclass(frozen=True)
class Traffic:
    """Cluster reads and writes per second, from the portal's KeyViz history."""

    reads: tuple[float, ...]  # per column, oldest first
    writes: tuple[float, ...]
    column_unix_ms: tuple[int, ...]
    step_ms: int
    error: str | None = None  # the history could not be read

    @property
    def empty(self) -> bool:
        return not self.column_unix_ms

    @property
    def reads_per_s(self) -> float | None:
        return self.reads[-1] if self.reads else None

    @property
    def writes_per_s(self) -> float | None:
        return self.writes[-1] if self.writes else None


def read_traffic(now_ms: int, step_ms: int) -> Traffic:
    """Reads and writes per second of the newest TRAFFIC_COLUMNS stored columns."""
    from keyviz.store import StoreError, read_matrix

    from_ms = now_ms - TRAFFIC_COLUMNS * step_ms
    per_series: list[dict[int, float]] = []
    used_step = step_ms
    try:
        for series in (admin_pb2.KEYVIZ_SERIES_READS, admin_pb2.KEYVIZ_SERIES_WRITES):
            m = read_matrix(series, from_ms, now_ms + 1).matrix
            used_step = m.step_ms or step_ms
            # Only non-zero cells are stored: a column without rows had no traffic.
            totals = m.values.sum(axis=0, dtype=np.uint64) if len(m.rows) else None
            per_series.append(
                {
                    int(t): (int(totals[j]) if totals is not None else 0) * 1000.0 / used_step
                    for j, t in enumerate(m.column_unix_ms.tolist())
                }
            )
    except StoreError as exc:
        return Traffic((), (), (), step_ms, f"the KeyViz history cannot be read: {exc}")
    times = sorted(set(per_series[0]) | set(per_series[1]))[-TRAFFIC_COLUMNS:]
    return Traffic(
        tuple(per_series[0].get(t, 0.0) for t in times),
        tuple(per_series[1].get(t, 0.0) for t in times),
        tuple(times),
        used_step,
    )


def leadership_hints(leaders: dict[str, int], groups_led: int, nodes: int) -> list[str]:
    """Nodes leading far more groups than a fair share (leadership to rebalance)."""
    if nodes < 2 or not groups_led:
        return []
    fair = groups_led / nodes
    return [
        f"{node} leads {led} of {groups_led} groups (a fair share is {fair:.1f})"
        for node, led in leaders.items()
        if led > LEADER_SHARE_LIMIT * fair and led >= fair + LEADER_EXCESS_MIN
    ]


@dataclass(frozen=True)
class Overview:
    health: ClusterHealth
    summary: OverviewSummary
    nodes: list[NodeRow]
    groups: list[GroupConsensus]
    catalog: Catalog
    traffic: Traffic | None = None
    leadership: list[str] = field(default_factory=list)


async def overview() -> Overview:
    client = node_client()
    health = await cluster_health()
    step_ms = client.config.keyviz_step_ms or 60_000
    supports, catalog, traffic = await asyncio.gather(
        _supports(client, health),
        fetch_catalog(client, health),
        sync_to_async(read_traffic, thread_sensitive=False)(health.now_ms, step_ms),
    )
    groups = list(health.consensus.values())
    summary = OverviewSummary(
        nodes_up=health.responded,
        nodes_total=health.total,
        groups=len(groups),
        groups_with_leader=sum(1 for g in groups if g.has_leader),
        leaders=leaders_per_node(groups),
        routes=len(catalog.routes) if catalog.source is not None else None,
        catalog_version=catalog.version,
    )
    hints = leadership_hints(summary.leaders, summary.groups_with_leader, health.total)
    return Overview(health, summary, node_rows(health, supports), groups, catalog, traffic, hints)


# -- Raft groups ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """One node's state for one group."""

    node: str
    address: str
    is_leader: bool
    leader: str  # whom this node names
    term: int
    commit_index: int
    applied_index: int
    lag: int | None  # None: the leader did not report
    last_contact_unix_ms: int
    last_contact_age_ms: int | None  # None: unknown (0 on the wire)
    # False: the node does not answer now; the row is its last answer, from seen_at_ms.
    reachable: bool = True
    seen_at_ms: int | None = None
    # A slow node not heard from within the page budget: its last answer, from as_of_ms.
    as_of_ms: int | None = None
    progress: Progress = field(default_factory=lambda: Progress(None, None, ()))

    @property
    def unreachable_since_ms(self) -> int | None:
        return None if self.reachable else self.seen_at_ms


@dataclass(frozen=True)
class GroupView:
    consensus: GroupConsensus
    replicas: list[Replica]

    @property
    def raft_group_id(self) -> int:
        return self.consensus.raft_group_id

    @property
    def unreachable(self) -> int:
        return sum(1 for r in self.replicas if not r.reachable)


@dataclass(frozen=True)
class RaftGroupsView:
    health: ClusterHealth
    groups: list[GroupView]

    @property
    def highlighted(self) -> int:
        return sum(1 for g in self.groups if g.consensus.highlight)


def group_views(health: ClusterHealth) -> list[GroupView]:
    """Every group with a row per replica: the nodes that answered, then the last-known
    state of the nodes that did not (marked unreachable since their last answer)."""
    reports = health.reports()
    stale_reports = health.stale_reports()
    by_group: dict[int, list[GroupReport]] = {}
    for report in reports:
        by_group.setdefault(report.raft_group_id, []).append(report)
    stale_by_group: dict[int, list[GroupReport]] = {}
    for report in stale_reports:
        stale_by_group.setdefault(report.raft_group_id, []).append(report)
    address = {n.label: n.address for n in health.nodes}
    seen_at = {a: at for a, (_, at) in health.stale_groups.items()}
    as_of = {s.node: s.as_of_ms for s in health.statuses if s.as_of_ms is not None}
    # Groups only dead nodes knew: their last-known consensus.
    consensus = dict(health.consensus)
    for gid, c in consensus_by_group(stale_reports).items():
        consensus.setdefault(gid, c)
    history = runtime().raft_history
    views = []
    for gid in sorted(consensus):
        c = consensus[gid]
        members = by_group.get(gid, [])
        leader_applied = next((r.applied_index for r in members if r.node == c.leader), None)
        replicas = [
            Replica(
                node=r.node,
                address=address.get(r.node, ""),
                is_leader=bool(c.leader) and r.node == c.leader,
                leader=r.leader,
                term=r.term,
                commit_index=r.commit_index,
                applied_index=r.applied_index,
                lag=applied_lag(leader_applied, r.applied_index),
                last_contact_unix_ms=r.last_contact_unix_ms,
                last_contact_age_ms=last_contact_age_ms(r.last_contact_unix_ms, health.now_ms),
                as_of_ms=as_of.get(r.node),
                progress=history.progress(r.node, gid, health.now_ms),
            )
            for r in members
        ]
        replicas += [
            Replica(
                node=r.node,
                address=address.get(r.node, ""),
                is_leader=False,
                leader=r.leader,
                term=r.term,
                commit_index=r.commit_index,
                applied_index=r.applied_index,
                lag=None,
                last_contact_unix_ms=r.last_contact_unix_ms,
                last_contact_age_ms=None,
                reachable=False,
                seen_at_ms=seen_at.get(address.get(r.node, "")),
                progress=history.progress(r.node, gid, health.now_ms),
            )
            for r in stale_by_group.get(gid, [])
        ]
        views.append(GroupView(c, replicas))
    return views


async def raft_groups() -> RaftGroupsView:
    health = await cluster_health()
    return RaftGroupsView(health, group_views(health))


# -- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRow:
    route: RouteEntry
    start: KeyPreview
    end: KeyPreview


@dataclass(frozen=True)
class RoutesView:
    health: ClusterHealth
    catalog: Catalog
    query: RouteQuery
    rows: list[RouteRow]
    groups: list[int] = field(default_factory=list)  # every group in the catalog, for the filter


def route_rows(routes: Sequence[RouteEntry], query: RouteQuery) -> list[RouteRow]:
    chosen = sort_routes(
        filter_routes(routes, group=query.group, prefix=query.prefix),
        query.sort,
        descending=query.descending,
    )
    return [RouteRow(r, key_preview(r.start), key_preview(r.end, is_end=True)) for r in chosen]


async def routes(query: RouteQuery) -> RoutesView:
    client = node_client()
    health = await cluster_health()
    catalog = await fetch_catalog(client, health)
    groups = sorted({r.raft_group_id for r in catalog.routes})
    return RoutesView(health, catalog, query, route_rows(catalog.routes, query), groups)


# -- adapters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterSource:
    """How one node answered GetAdapterSummary."""

    node: str
    address: str
    state: str  # "ok", "unsupported" (UNIMPLEMENTED), "waiting" (slow, not asked) or "failed"
    error: str | None = None


@dataclass(frozen=True)
class AdaptersView:
    health: ClusterHealth
    rows: list[AdapterRow]
    sources: list[AdapterSource]

    @property
    def answered(self) -> list[AdapterSource]:
        return [s for s in self.sources if s.state == "ok"]

    @property
    def unsupported(self) -> list[AdapterSource]:
        return [s for s in self.sources if s.state == "unsupported"]

    @property
    def waiting(self) -> list[AdapterSource]:
        return [s for s in self.sources if s.state == "waiting"]

    @property
    def unsupported_everywhere(self) -> bool:
        """Every node that could be asked answered UNIMPLEMENTED: the version lacks it."""
        return bool(self.unsupported) and not self.answered


def adapter_summaries_of(
    response: admin_pb2.GetAdapterSummaryResponse,
) -> tuple[admin_pb2.AdapterSummary, ...]:
    for s in response.summaries:
        if not s.adapter:
            raise MalformedResponse("GetAdapterSummary has an entry without an adapter name")
        for name in ("p50_ns", "p95_ns", "p99_ns"):
            value = getattr(s, name)
            if not value >= 0:  # also NaN
                raise MalformedResponse(f"GetAdapterSummary {s.adapter} {name} is {value}")
    return tuple(response.summaries)


def adapter_samples(
    nodes: Sequence[Node], results: dict[str, tuple[admin_pb2.AdapterSummary, ...]]
) -> list[AdapterSample]:
    return [
        AdapterSample(
            node=node.label,
            adapter=s.adapter,
            operation=s.operation,
            requests=s.requests,
            in_flight=s.in_flight,
            bytes_in=s.bytes_in,
            bytes_out=s.bytes_out,
            p50_ns=s.p50_ns,
            p95_ns=s.p95_ns,
            p99_ns=s.p99_ns,
        )
        for node in nodes
        for s in results.get(node.address, ())
    ]


async def adapters() -> AdaptersView:
    """GetAdapterSummary on every node that passed the health check, merged, within the
    page budget (a slow node is not asked: see ClusterHealth.page_budget)."""
    client = node_client()
    health = await cluster_health()
    budget = health.page_budget()
    asked = [n for n in health.nodes if n.address in health.groups or n.address in budget.skip]
    result = await fan_out(
        client, asked, "GetAdapterSummary", validate=adapter_summaries_of, budget=budget
    )
    by_address = {s.address: s for s in result.statuses}
    sources = []
    for node, status in zip(health.nodes, health.statuses, strict=True):
        answer = by_address.get(node.address)
        if answer is None:
            sources.append(AdapterSource(node.label, node.address, "failed", status.error))
        elif answer.ok:
            sources.append(AdapterSource(node.label, node.address, "ok"))
        elif answer.code == WAITING:
            sources.append(AdapterSource(node.label, node.address, "waiting", answer.error))
        elif answer.code == "UNIMPLEMENTED":
            sources.append(AdapterSource(node.label, node.address, "unsupported", answer.error))
        else:
            sources.append(AdapterSource(node.label, node.address, "failed", answer.error))
    rows = merge_adapter_summaries(adapter_samples(asked, result.results))
    return AdaptersView(health, rows, sources)
