"""Cluster membership from the seed addresses (DESIGN.md "Talking to nodes").

Ask the seeds, in order, for GetClusterOverview until one answers; the nodes
are that node plus its members, deduplicated by node id then address and
capped. The answer is cached for the refresh interval with one refresh in
flight at a time. When no seed answers, the last membership a seed gave is kept (marked
``last_known`` with when it was confirmed: "0 of 3 nodes", never "0 of 1"); only when no
seed has ever answered are the seeds themselves the nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cluster.client import NodeClient, NodeError
from cluster.fanout import Node
from cluster.flight import SingleFlight
from proto import admin_pb2

# Retry the seeds sooner when none answered: the cluster may just be starting.
FALLBACK_TTL_S = 2.0


@dataclass(frozen=True)
class Membership:
    nodes: tuple[Node, ...]
    source: str  # the seed that answered, or "" when falling back to the seeds
    truncated: int = 0  # nodes left out by the cap
    seed_errors: dict[str, NodeError] = field(default_factory=dict)
    expires_at: float = 0.0
    # No seed answered now: these are the nodes a seed last named, at confirmed_at_ms.
    last_known: bool = False
    confirmed_at_ms: int | None = None  # when a seed last answered (unix ms)
    # Raft group -> (leader node id, term) as the answering seed named them: discovery is
    # the one caller of GetClusterOverview, so everyone else reads them here.
    leaders: dict[int, tuple[str, int]] = field(default_factory=dict)
    fetched_at: float = 0.0  # time.monotonic() of the refresh that made this


def _reachable_address(advertised: str, dialed: str) -> str:
    """A member's advertised address, with a wildcard host replaced by the seed's host."""
    host, sep, port = advertised.rpartition(":")
    if not sep:
        return advertised
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - recognising, not binding
        return f"{dialed.rpartition(':')[0]}:{port}"
    return advertised


def members_from_overview(
    response: admin_pb2.GetClusterOverviewResponse, dialed: str, cap: int
) -> tuple[list[Node], int]:
    """self + members, deduplicated by node id then address, capped at ``cap``."""
    candidates = [Node(response.self.node_id, dialed)]
    for member in response.members:
        if member.grpc_address:
            candidates.append(Node(member.node_id, _reachable_address(member.grpc_address, dialed)))
    seen_ids: set[str] = set()
    seen_addresses: set[str] = set()
    nodes: list[Node] = []
    for node in candidates:
        if (node.node_id and node.node_id in seen_ids) or node.address in seen_addresses:
            continue
        if node.node_id:
            seen_ids.add(node.node_id)
        seen_addresses.add(node.address)
        nodes.append(node)
    return nodes[:cap], max(0, len(nodes) - cap)


def leaders_from_overview(
    response: admin_pb2.GetClusterOverviewResponse,
) -> dict[int, tuple[str, int]]:
    return {g.raft_group_id: (g.leader_node_id, g.leader_term) for g in response.group_leaders}


class Discovery:
    def __init__(
        self, client: NodeClient, seeds: Sequence[str], refresh_interval_s: float, max_nodes: int
    ) -> None:
        self.client = client
        self.seeds = tuple(seeds)
        self.refresh_interval_s = refresh_interval_s
        self.max_nodes = max_nodes
        self._lock = threading.Lock()
        self._cached: Membership | None = None
        # The last membership a seed gave (already capped at max_nodes).
        self._last_good: Membership | None = None
        self._flight: SingleFlight[Membership] = SingleFlight()

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    async def membership(self, *, max_age_s: float | None = None) -> Membership:
        """The cached membership, refreshed when it expired or (``max_age_s``, for a caller
        that needs fresher group leaders) is older than that."""
        with self._lock:
            cached = self._cached
        now = time.monotonic()
        fresh_enough = max_age_s is None or (cached and now - cached.fetched_at < max_age_s)
        if cached and now < cached.expires_at and fresh_enough:
            return cached
        return await self._flight.run("membership", self._refresh)

    def last(self) -> Membership | None:
        """The newest membership held, expired or not (a page that cannot wait for a
        refresh uses it)."""
        with self._lock:
            return self._cached or self._last_good

    async def nodes(self) -> list[Node]:
        return list((await self.membership()).nodes)

    async def _refresh(self) -> Membership:
        errors: dict[str, NodeError] = {}
        result: Membership | None = None
        for seed in self.seeds:
            try:
                response = await self.client.call(seed, "GetClusterOverview")
            except NodeError as exc:
                errors[seed] = exc
                continue
            nodes, truncated = members_from_overview(response, seed, self.max_nodes)
            expires = time.monotonic() + self.refresh_interval_s
            now_ms = time.time_ns() // 1_000_000
            result = Membership(
                tuple(nodes),
                seed,
                truncated,
                errors,
                expires,
                confirmed_at_ms=now_ms,
                leaders=leaders_from_overview(response),
                fetched_at=time.monotonic(),
            )
            break
        with self._lock:
            last_good = self._last_good
        if result is None:
            expires = time.monotonic() + min(self.refresh_interval_s, FALLBACK_TTL_S)
            if last_good is not None:
                result = replace(
                    last_good,
                    source="",
                    seed_errors=errors,
                    expires_at=expires,
                    last_known=True,
                    fetched_at=time.monotonic(),
                )
            else:
                fallback = tuple(Node("", seed) for seed in self.seeds[: self.max_nodes])
                result = Membership(fallback, "", 0, errors, expires, fetched_at=time.monotonic())
        with self._lock:
            self._cached = result
            if result.source:
                self._last_good = result
        # Close what the client holds for addresses that left (a seed may report new ones
        # on every refresh).
        self.client.retain({n.address for n in result.nodes} | set(self.seeds))
        return result
