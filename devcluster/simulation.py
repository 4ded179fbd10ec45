"""The simulated cluster: nodes, Raft groups, the route catalog, and who records what.

Pure state and arithmetic: no threads, sockets or clocks. DevCluster serialises access to
it with one lock and serves it over gRPC.
"""

from __future__ import annotations

import bisect
import queue
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import numpy as np
from numpy.typing import NDArray

from devcluster.adapters import ADAPTERS, AdapterStats
from devcluster.catalog import Route, RouteCatalog, sub_range_splits
from devcluster.ops import OpBatch
from devcluster.sampler import ALL_SERIES, Column, KeyVizSampler, role_bit
from devcluster.workload import Keyspace
from proto import admin_pb2

HEARTBEAT_MS = 100

_LEADER_WRITE = role_bit(admin_pb2.SAMPLE_ROLE_LEADER_WRITE)
_LEADER_READ = role_bit(admin_pb2.SAMPLE_ROLE_LEADER_READ)
_FOLLOWER_READ = role_bit(admin_pb2.SAMPLE_ROLE_FOLLOWER_READ)

EventQueue = queue.SimpleQueue[admin_pb2.StreamEventsEvent | None]


class Profile(StrEnum):
    UPSTREAM = "upstream"  # behaves like today's real nodes
    DESIGN = "design"  # everything DESIGN.md asks of nodes


class ClusterError(RuntimeError):
    """The simulated cluster cannot do what was asked (node down, no leader, bad route)."""


@dataclass(slots=True)
class RaftGroup:
    group_id: int
    leader: str  # "" while no leader is known
    term: int
    commit_index: int
    leader_lost_ms: int = 0  # followers' last contact once the leader is gone


@dataclass(eq=False, slots=True)
class SimNode:
    node_id: str
    index: int
    sampler: KeyVizSampler
    up: bool = True
    keyviz_enabled: bool = True
    adapter_stats: AdapterStats = field(default_factory=AdapterStats)
    route_stats: dict[int, AdapterStats] = field(default_factory=dict)
    subscribers: set[EventQueue] = field(default_factory=set)


Grouped = tuple[
    tuple[NDArray[np.intp], ...], NDArray[np.int64], NDArray[np.int64], NDArray[np.intp]
]


def _group(
    columns: Sequence[NDArray[np.int64]], dims: Sequence[int], nbytes: NDArray[np.int64]
) -> Grouped:
    """Distinct rows of `columns` (each within its dim): (key columns, counts, byte sums,
    inverse index of every op)."""
    uniq, inverse = np.unique(np.ravel_multi_index(columns, dims), return_inverse=True)
    counts = np.bincount(inverse, minlength=uniq.size)
    sums = np.rint(np.bincount(inverse, weights=nbytes, minlength=uniq.size)).astype(np.int64)
    return np.unravel_index(uniq, dims), counts, sums, inverse


def _split(
    values: NDArray[np.int64], inverse: NDArray[np.intp], counts: NDArray[np.int64]
) -> list[NDArray[np.int64]]:
    """`values` of each group, in op order."""
    return np.split(values[np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1])


class ClusterSim:
    def __init__(
        self,
        *,
        nodes: int = 3,
        groups: int = 3,
        routes: int = 8,
        profile: Profile = Profile.UPSTREAM,
        history_columns: int = 1440,
        max_tracked_routes: int = 10_000,
        adapter_rows: bool = False,
        sample_rate: float = 1.0,
        seed: int = 0,
        keyspace: Keyspace | None = None,
        key_buckets_per_route: int = 1,
    ) -> None:
        if nodes < 1 or groups < 1:
            raise ValueError("a cluster needs at least one node and one group")
        self.profile = Profile(profile)
        self._make_sampler = partial(
            KeyVizSampler,
            history_columns=history_columns,
            max_tracked_routes=max_tracked_routes,
            adapter_rows=adapter_rows,
            sample_rate=sample_rate,
            design=self.profile is Profile.DESIGN,
        )
        self._adapter_rows = adapter_rows
        self._sample_rate = sample_rate
        self._rng = np.random.default_rng(seed)
        if keyspace is None:
            keyspace = Keyspace(np.random.default_rng(seed), size=max(2048, 4 * routes))
        self.keyspace = keyspace
        self.catalog = RouteCatalog(self.keyspace.boundaries(routes), groups)
        routes = len(self.catalog.routes)
        if key_buckets_per_route < 1:
            raise ValueError("key_buckets_per_route must be at least 1")
        self._key_buckets = key_buckets_per_route
        self._index_sub_ranges()
        self._initial_routes = routes
        self._hlc = 0
        self.nodes: dict[str, SimNode] = {}
        for i in range(nodes):
            node_id = f"n{i + 1}"
            self.nodes[node_id] = SimNode(node_id, i, self.new_sampler())
        self._by_index = list(self.nodes.values())
        ids = list(self.nodes)
        self.groups = {
            g: RaftGroup(g, leader=ids[(g - 1) % nodes], term=1, commit_index=1)
            for g in range(1, groups + 1)
        }

    # -- membership and Raft --------------------------------------------------------------

    def node(self, node_id: str) -> SimNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise ClusterError(f"no node {node_id!r}; nodes are {list(self.nodes)}") from None

    def group(self, group_id: int) -> RaftGroup:
        try:
            return self.groups[group_id]
        except KeyError:
            raise ClusterError(f"no Raft group {group_id}") from None

    def live_indices(self) -> NDArray[np.int64]:
        return np.array([n.index for n in self._by_index if n.up], dtype=np.int64)

    def stop_node(self, node_id: str, now_ms: int) -> None:
        node = self.node(node_id)
        if not node.up:
            return
        node.up = False
        for q in node.subscribers:
            q.put(None)
        node.subscribers.clear()
        quorum = self._has_quorum()
        for group in self.groups.values():
            # Leaders that lose their majority step down (Raft's check-quorum).
            if group.leader == node_id or not quorum:
                self._elect(group, now_ms)

    def start_node(self, node_id: str, now_ms: int) -> None:
        node = self.node(node_id)
        if node.up:
            return
        # A restarted node has lost its in-memory history, like a real one.
        node.up = True
        node.sampler = self.new_sampler()
        node.adapter_stats = AdapterStats()
        node.route_stats = {}
        for group in self.groups.values():
            if not group.leader:
                self._elect(group, now_ms)

    def transfer_leadership(self, group_id: int, to_node: str) -> int:
        group, target = self.group(group_id), self.node(to_node)
        if not target.up:
            raise ClusterError(f"cannot transfer group {group_id} to {to_node}: it is down")
        if group.leader != to_node:
            self._install_leader(group, to_node)
        return group.term

    def last_contact_ms(self, group: RaftGroup, node_id: str, now_ms: int) -> int:
        # Contact measures a follower's heartbeat age; the leader hears none (0, unknown).
        if group.leader == node_id:
            return 0
        if group.leader:
            return now_ms - now_ms % HEARTBEAT_MS
        return group.leader_lost_ms

    def _has_quorum(self) -> bool:
        return 2 * sum(n.up for n in self._by_index) > len(self._by_index)

    def _elect(self, group: RaftGroup, now_ms: int) -> None:
        if not self._has_quorum():
            if group.leader:
                group.leader, group.leader_lost_ms = "", now_ms
            return
        live = [n for n in self._by_index if n.up]
        # The next live node after the old leader, so repeated failures spread leadership.
        old = self.nodes[group.leader].index if group.leader else -1
        winner = min(live, key=lambda n: (n.index - old - 1) % len(self._by_index))
        self._install_leader(group, winner.node_id)

    def _install_leader(self, group: RaftGroup, node_id: str) -> None:
        group.leader = node_id
        group.term += 1
        group.commit_index += 1  # a new leader commits a no-op entry of its term

    # -- catalog ----------------------------------------------------------------------------

    def split_route(self, route_id: int, at_key: bytes, now_ms: int) -> tuple[Route, Route]:
        try:
            left, right = self.catalog.split(route_id, at_key, self._next_hlc(now_ms))
        except ValueError as e:
            raise ClusterError(str(e)) from None
        self._catalog_changed(
            [(route_id, (left.route_id, right.route_id), left.lineage_id)], now_ms
        )
        return left, right

    def merge_routes(self, left_id: int, right_id: int, now_ms: int) -> Route:
        try:
            merged = self.catalog.merge(left_id, right_id)
        except ValueError as e:
            raise ClusterError(str(e)) from None
        # One transition per parent: RouteTransition names a single parent.
        self._catalog_changed(
            [(p, (merged.route_id,), merged.lineage_id) for p in (left_id, right_id)], now_ms
        )
        return merged

    def random_event(self, now_ms: int) -> str:
        """One leadership transfer, split or merge, as a real cluster sees now and then."""
        rng, routes = self._rng, self.catalog.routes
        live = [n.node_id for n in self._by_index if n.up]
        choice = rng.random()
        if choice < 0.5:
            group = self.groups[int(rng.integers(1, len(self.groups) + 1))]
            others = [n for n in live if n != group.leader]
            if group.leader and others:
                to = others[int(rng.integers(len(others)))]
                term = self.transfer_leadership(group.group_id, to)
                return f"group {group.group_id} leader -> {to} (term {term})"
        elif choice < 0.75 and len(routes) < 2 * self._initial_routes:
            route = routes[int(rng.integers(len(routes)))]
            at = self.keyspace.split_key(route)
            if at is not None:
                left, right = self.split_route(route.route_id, at, now_ms)
                return (
                    f"route {route.route_id} split at {at!r} -> {left.route_id}, {right.route_id}"
                )
        elif len(routes) > max(2, self._initial_routes // 2):
            i = int(rng.integers(len(routes) - 1))
            merged = self.merge_routes(routes[i].route_id, routes[i + 1].route_id, now_ms)
            return (
                f"routes {routes[i].route_id}+{routes[i + 1].route_id} merged -> {merged.route_id}"
            )
        return "no event"

    def _next_hlc(self, now_ms: int) -> int:
        # 48 bits of physical milliseconds, 16 of logical counter.
        self._hlc = max(self._hlc + 1, now_ms << 16)
        return self._hlc

    def _index_sub_ranges(self) -> None:
        """Sub-range split keys per route and each workload key's sub-range (none with
        one bucket per route)."""
        keys = self.keyspace.keys
        self.sub_splits: dict[int, tuple[bytes, ...]] = {}
        self._key_sub = np.zeros(len(keys), dtype=np.int64)
        if self._key_buckets < 2:
            return
        for route in self.catalog.routes:
            splits = self.sub_splits[route.route_id] = sub_range_splits(
                route, keys, self._key_buckets
            )
            lo = bisect.bisect_left(keys, route.start)
            hi = bisect.bisect_left(keys, route.end) if route.end else len(keys)
            self._key_sub[lo:hi] = [bisect.bisect_right(splits, k) for k in keys[lo:hi]]

    def sub_of_key(self, key: bytes) -> int:
        """The key's sub-range of its route (0 with one bucket per route)."""
        splits = self.sub_splits.get(self.catalog.route_for_key(key).route_id, ())
        return bisect.bisect_right(splits, key)

    def _catalog_changed(
        self, transitions: Sequence[tuple[int, tuple[int, ...], str]], now_ms: int
    ) -> None:
        routes = self.catalog.routes
        self._index_sub_ranges()
        for node in self._by_index:
            if node.up:
                node.sampler.set_routes(routes, self.sub_splits)
        if self.profile is not Profile.DESIGN:
            return
        for parent, children, lineage in transitions:
            event = admin_pb2.StreamEventsEvent(
                route_transition=admin_pb2.RouteTransition(
                    parent_route_id=parent,
                    child_route_ids=children,
                    lineage_id=lineage,
                    unix_ms=now_ms,
                )
            )
            for node in self._by_index:
                for q in node.subscribers:
                    q.put(event)

    # -- traffic ----------------------------------------------------------------------------

    def apply(self, batch: OpBatch, *, strict: bool) -> int:
        """Serve a batch: route, pick the serving and recording nodes, count. Returns ops served.

        strict: raise ClusterError (and count nothing) if any op cannot be served; otherwise
        drop those ops, as failed client requests.
        """
        group_of = self.catalog.group_ids[batch.route_pos]
        leader_of = np.full(max(self.groups) + 1, -1, dtype=np.int64)
        for group in self.groups.values():
            if group.leader:
                leader_of[group.group_id] = self.nodes[group.leader].index
        leader = leader_of[group_of]
        up = np.array([n.up for n in self._by_index], dtype=np.bool_)
        ok = up[batch.entry] & (leader >= 0)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            entry = self._by_index[int(batch.entry[bad])]
            if strict:
                reason = "is down" if not entry.up else "found no leader for the key's group"
                raise ClusterError(f"op {bad}: entry node {entry.node_id} {reason}")
            batch, group_of, leader = batch.take(ok), group_of[ok], leader[ok]
        if not batch.size:
            return 0
        served = np.where(batch.is_write | ~batch.follower_local, leader, batch.entry)
        design = self.profile is Profile.DESIGN
        # Upstream counts a write where the client entered; the design, on the group leader.
        recorder = np.where(batch.is_write, leader if design else batch.entry, served)
        roles = np.zeros(batch.size, dtype=np.int64)
        if design:
            read_role = np.where(served == leader, _LEADER_READ, _FOLLOWER_READ)
            roles = np.where(batch.is_write, _LEADER_WRITE, read_role)
        written, counts = np.unique(group_of[batch.is_write], return_counts=True)
        for group_id, count in zip(written.tolist(), counts.tolist(), strict=True):
            self.groups[group_id].commit_index += count
        self._record_keyviz(batch, recorder, roles)
        self._record_adapters(batch, recorder)
        return batch.size

    def _record_keyviz(
        self, batch: OpBatch, recorder: NDArray[np.int64], roles: NDArray[np.int64]
    ) -> None:
        if self._sample_rate < 1.0:
            kept = self._rng.random(batch.size) < self._sample_rate
            batch, recorder, roles = batch.take(kept), recorder[kept], roles[kept]
        label = batch.adapter if self._adapter_rows else np.zeros(batch.size, dtype=np.int64)
        if batch.sub is not None:
            sub = batch.sub
        elif batch.key_index is not None:
            sub = self._key_sub[batch.key_index]
        else:
            sub = np.zeros(batch.size, dtype=np.int64)
        dims = (
            len(self._by_index),
            len(self.catalog.routes),
            2,
            8,
            len(ADAPTERS),
            self._key_buckets,
        )
        columns = (recorder, batch.route_pos, batch.is_write.astype(np.int64), roles, label, sub)
        (node_at, pos, is_write, role, label_at, sub_at), counts, sums, _ = _group(
            columns, dims, batch.nbytes
        )
        observers = [n.sampler.observe if n.keyviz_enabled else None for n in self._by_index]
        names = ADAPTERS if self._adapter_rows else ("",) * len(ADAPTERS)
        for n, route_id, w, count, nbytes, r, lab, sb in zip(
            node_at.tolist(),
            self.catalog.route_ids[pos].tolist(),
            is_write.tolist(),
            counts.tolist(),
            sums.tolist(),
            role.tolist(),
            label_at.tolist(),
            sub_at.tolist(),
            strict=True,
        ):
            observe = observers[n]
            if observe is not None:
                observe(route_id, w, count, nbytes, names[lab], r, sb)

    def _record_adapters(self, batch: OpBatch, recorder: NDArray[np.int64]) -> None:
        is_write = batch.is_write.astype(np.int64)
        # The adapter that took the request runs on the entry node.
        (node_at, adapter, write), counts, sums, inverse = _group(
            (batch.entry, batch.adapter, is_write),
            (len(self._by_index), len(ADAPTERS), 2),
            batch.nbytes,
        )
        latencies = _split(batch.latency_ns, inverse, counts)
        for n, a, w, nbytes, lat in zip(
            node_at.tolist(),
            adapter.tolist(),
            write.tolist(),
            sums.tolist(),
            latencies,
            strict=True,
        ):
            self._by_index[n].adapter_stats.add(ADAPTERS[a], bool(w), nbytes, lat)
        if self.profile is not Profile.DESIGN:
            return
        # Route detail breaks down what the recording node counted for the route.
        (node_at, pos, adapter, write), counts, sums, inverse = _group(
            (recorder, batch.route_pos, batch.adapter, is_write),
            (len(self._by_index), len(self.catalog.routes), len(ADAPTERS), 2),
            batch.nbytes,
        )
        latencies = _split(batch.latency_ns, inverse, counts)
        for n, route_id, a, w, nbytes, lat in zip(
            node_at.tolist(),
            self.catalog.route_ids[pos].tolist(),
            adapter.tolist(),
            write.tolist(),
            sums.tolist(),
            latencies,
            strict=True,
        ):
            stats = self._by_index[n].route_stats.setdefault(route_id, AdapterStats())
            stats.add(ADAPTERS[a], bool(w), nbytes, lat)

    def flush(self, node_id: str, at_ms: int) -> Column:
        node = self.node(node_id)
        if not node.up or not node.keyviz_enabled:
            raise ClusterError(f"node {node_id} is down or runs without its KeyViz sampler")
        terms = {g.group_id: g.term for g in self.groups.values()}
        column = node.sampler.flush(at_ms, terms)
        if node.subscribers and self.profile is Profile.DESIGN:
            for series in ALL_SERIES:
                event = admin_pb2.StreamEventsEvent(
                    keyviz_column=admin_pb2.KeyVizColumn(
                        column_unix_ms=at_ms,
                        series=series,
                        rows=node.sampler.column_rows(column, series),
                    )
                )
                for q in node.subscribers:
                    q.put(event)
        return column

    def new_sampler(self) -> KeyVizSampler:
        sampler = self._make_sampler()
        sampler.set_routes(self.catalog.routes, self.sub_splits)
        return sampler
