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
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

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
from cluster.client import UNAVAILABLE_TTL_S, NodeClient, node_client
from cluster.discovery import Membership, discovery
from cluster.fanout import (
    FanOut,
    MalformedResponse,
    Node,
    NodeStatus,
    NodeStatusSummary,
    call_node,
    fan_out,
)
from cluster.params import RouteQuery
from cluster.probes import PROBE_DEADLINE_S, NodeSupport, reset_support_cache, support_cache
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

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.membership.nodes

    def status_of(self, address: str) -> NodeStatus | None:
        for status in self.statuses:
            if status.address == address:
                return status
        return None

    def reports(self) -> list[GroupReport]:
        out = []
        for node in self.nodes:
            for g in self.groups.get(node.address, ()):
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


class _SingleFlight:
    """Concurrent callers on one event loop share one in-flight health fetch (no caching
    beyond it: the answer is as fresh as the call everyone waited for)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[ClusterHealth]
        ] = weakref.WeakKeyDictionary()
        # When each address last made us drop the membership cache.
        self._invalidated: dict[str, float] = {}

    async def health(self) -> ClusterHealth:
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._tasks.get(loop)
            if task is None or task.done():
                task = loop.create_task(self._fetch())
                self._tasks[loop] = task
        return await asyncio.shield(task)

    async def _fetch(self) -> ClusterHealth:
        membership = await discovery().membership()
        result: FanOut[tuple[admin_pb2.RaftGroupState, ...]] = await fan_out(
            node_client(), membership.nodes, HEALTH_METHOD, validate=raft_groups_of
        )
        self._maybe_invalidate(result.statuses)
        statuses = tuple(_explain(s) for s in result.statuses)
        health = ClusterHealth(membership, statuses, dict(result.results), {}, _now_ms())
        return replace(health, consensus=consensus_by_group(health.reports()))

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


_flight: _SingleFlight | None = None
_flight_lock = threading.Lock()


async def cluster_health() -> ClusterHealth:
    global _flight
    with _flight_lock:
        if _flight is None:
            _flight = _SingleFlight()
        flight = _flight
    return await flight.health()


def reset_services() -> None:
    """Forget shared state (tests that change settings): the single-flight, the probes."""
    global _flight
    with _flight_lock:
        _flight = None
    reset_support_cache()


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


async def _supports(client: NodeClient, health: ClusterHealth) -> dict[str, NodeSupport]:
    answering = [s.address for s in health.statuses if s.ok]
    deadline = min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)
    return await support_cache().support_of(client, answering, deadline)


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
    status = health.status_of(node.address)
    supports = (
        await support_cache().support_of(
            client, [node.address], min(client.config.rpc_timeout_s, PROBE_DEADLINE_S)
        )
        if status is not None and status.ok
        else {}
    )
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
        return "no node answered ListRoutes: " + "; ".join(
            f"{s.node}: {s.error}" for s in self.errors
        )


async def fetch_catalog(client: NodeClient, health: ClusterHealth) -> Catalog:
    """ListRoutes from the first node that answers: nodes that answered the health check
    first (a slow or dead node would cost a deadline), then the rest, in membership order."""
    answering = {s.address for s in health.statuses if s.ok}
    ordered = sorted(health.nodes, key=lambda n: n.address not in answering)
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


@dataclass(frozen=True)
class Overview:
    health: ClusterHealth
    summary: OverviewSummary
    nodes: list[NodeRow]
    groups: list[GroupConsensus]
    catalog: Catalog


async def overview() -> Overview:
    client = node_client()
    health = await cluster_health()
    supports, catalog = await asyncio.gather(
        _supports(client, health), fetch_catalog(client, health)
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
    return Overview(health, summary, node_rows(health, supports), groups, catalog)


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


@dataclass(frozen=True)
class GroupView:
    consensus: GroupConsensus
    replicas: list[Replica]

    @property
    def raft_group_id(self) -> int:
        return self.consensus.raft_group_id


@dataclass(frozen=True)
class RaftGroupsView:
    health: ClusterHealth
    groups: list[GroupView]

    @property
    def highlighted(self) -> int:
        return sum(1 for g in self.groups if g.consensus.highlight)


def group_views(health: ClusterHealth) -> list[GroupView]:
    reports = health.reports()
    by_group: dict[int, list[GroupReport]] = {}
    for report in reports:
        by_group.setdefault(report.raft_group_id, []).append(report)
    address = {n.label: n.address for n in health.nodes}
    views = []
    for gid, consensus in health.consensus.items():
        members = by_group.get(gid, [])
        leader_applied = next(
            (r.applied_index for r in members if r.node == consensus.leader), None
        )
        replicas = [
            Replica(
                node=r.node,
                address=address.get(r.node, ""),
                is_leader=bool(consensus.leader) and r.node == consensus.leader,
                leader=r.leader,
                term=r.term,
                commit_index=r.commit_index,
                applied_index=r.applied_index,
                lag=applied_lag(leader_applied, r.applied_index),
                last_contact_unix_ms=r.last_contact_unix_ms,
                last_contact_age_ms=last_contact_age_ms(r.last_contact_unix_ms, health.now_ms),
            )
            for r in members
        ]
        views.append(GroupView(consensus, replicas))
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
    state: str  # "ok", "unsupported" (UNIMPLEMENTED) or "failed"
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
    """GetAdapterSummary on every node that passed the health check, merged."""
    client = node_client()
    health = await cluster_health()
    answering = [n for n in health.nodes if n.address in health.groups]
    result = await fan_out(client, answering, "GetAdapterSummary", validate=adapter_summaries_of)
    by_address = {s.address: s for s in result.statuses}
    sources = []
    for node, status in zip(health.nodes, health.statuses, strict=True):
        asked = by_address.get(node.address)
        if asked is None:
            sources.append(AdapterSource(node.label, node.address, "failed", status.error))
        elif asked.ok:
            sources.append(AdapterSource(node.label, node.address, "ok"))
        elif asked.code == "UNIMPLEMENTED":
            sources.append(AdapterSource(node.label, node.address, "unsupported", asked.error))
        else:
            sources.append(AdapterSource(node.label, node.address, "failed", asked.error))
    rows = merge_adapter_summaries(adapter_samples(answering, result.results))
    return AdaptersView(health, rows, sources)
