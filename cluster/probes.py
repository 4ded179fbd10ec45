"""Which optional Admin RPCs a node serves, learned by asking cheaply and remembered a minute.

Real nodes today lack GetAdapterSummary, GetRouteDetail and StreamEvents, and answer
GetKeyVizMatrix with UNAVAILABLE when their sampler is off (CONTRACT.md). Capabilities in
GetClusterOverview do not say which RPCs exist, so the portal tries each one:

- GetKeyVizMatrix over the last second with rows=1 (UNAVAILABLE: KeyViz disabled);
- GetAdapterSummary (empty request);
- GetRouteDetail for the empty bucket id: any answer but UNIMPLEMENTED means served;
- StreamEvents, opened with a short deadline and cancelled: UNIMPLEMENTED or open.

Only definitive answers are remembered, and only while the node keeps its connection
(NodeClient.epoch): a node that restarted, perhaps with KeyViz enabled or Admin registered,
is asked again at once. A node that could not be asked (wrong token, unreachable, too slow)
is asked again on the next page load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cluster.client import NodeClient, NodeError
from cluster.flight import SingleFlight
from proto import admin_pb2

PROBE_TTL_S = 60.0
PROBE_DEADLINE_S = 2.0
PROBE_WINDOW_MS = 1000


class Support(StrEnum):
    YES = "yes"
    NO = "no"  # UNIMPLEMENTED: the node's version does not have it
    DISABLED = "disabled"  # served, but KeyViz is off on this node
    UNKNOWN = "unknown"  # the node could not be asked (see detail)


@dataclass(frozen=True, slots=True)
class RpcSupport:
    method: str
    support: Support
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeSupport:
    address: str
    rpcs: tuple[RpcSupport, ...]
    checked_at_ms: int

    @property
    def definitive(self) -> bool:
        return all(r.support is not Support.UNKNOWN for r in self.rpcs)

    def of(self, method: str) -> RpcSupport:
        for rpc in self.rpcs:
            if rpc.method == method:
                return rpc
        raise KeyError(method)

    def as_dict(self) -> dict[str, str]:
        return {r.method: r.support.value for r in self.rpcs}


PROBED_METHODS = ("GetKeyVizMatrix", "GetAdapterSummary", "GetRouteDetail", "StreamEvents")
KEYVIZ_DEPENDENT = frozenset({"GetKeyVizMatrix", "StreamEvents"})


def _unreachable(error: NodeError) -> bool:
    # A connection failure, not an UNAVAILABLE the node itself sent (its sampler is off).
    return error.code == "UNAVAILABLE" and not error.reachable


def classify_probe(method: str, error: NodeError | None) -> RpcSupport:
    """What one probe answer says about ``method`` on that node."""
    if error is None:
        return RpcSupport(method, Support.YES)
    if error.code == "UNIMPLEMENTED":
        return RpcSupport(method, Support.NO, f"{method} is not supported by this node")
    if error.code in ("UNAUTHENTICATED", "CANCELLED", "DEADLINE_EXCEEDED") or _unreachable(error):
        return RpcSupport(method, Support.UNKNOWN, error.message)
    if error.code == "UNAVAILABLE" and method in KEYVIZ_DEPENDENT:
        return RpcSupport(method, Support.DISABLED, "KeyViz disabled on this node")
    # The node ran the method and refused the probe's arguments (NOT_FOUND for the empty
    # bucket, INVALID_ARGUMENT, ...): it is served.
    return RpcSupport(method, Support.YES)


async def _probe_one(
    client: NodeClient, address: str, method: str, deadline_s: float, now_ms: int
) -> RpcSupport:
    try:
        if method == "GetKeyVizMatrix":
            request = admin_pb2.GetKeyVizMatrixRequest(
                series=admin_pb2.KEYVIZ_SERIES_WRITES,
                from_unix_ms=now_ms - PROBE_WINDOW_MS,
                to_unix_ms=now_ms,
                rows=1,
            )
            await client.call(address, method, request, deadline_s=deadline_s)
        elif method == "GetRouteDetail":
            await client.call(
                address,
                method,
                admin_pb2.GetRouteDetailRequest(bucket_id=""),
                deadline_s=deadline_s,
            )
        elif method == "StreamEvents":
            await client.probe_stream(
                address, method, admin_pb2.StreamEventsRequest(), deadline_s=deadline_s
            )
        else:
            await client.call(address, method, deadline_s=deadline_s)
    except NodeError as exc:
        return classify_probe(method, exc)
    return classify_probe(method, None)


async def probe_node(
    client: NodeClient, address: str, *, deadline_s: float = PROBE_DEADLINE_S
) -> NodeSupport:
    """Ask ``address`` about every optional RPC at once."""
    now_ms = time.time_ns() // 1_000_000
    rpcs = await asyncio.gather(
        *(_probe_one(client, address, m, deadline_s, now_ms) for m in PROBED_METHODS)
    )
    return NodeSupport(address, tuple(rpcs), now_ms)


class SupportCache:
    """Per-node probe results for ``ttl_s``; one probe per node in flight per event loop."""

    def __init__(self, ttl_s: float = PROBE_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, int, NodeSupport]] = {}
        self._flight: SingleFlight[NodeSupport] = SingleFlight()

    def forget(self, address: str | None = None) -> None:
        with self._lock:
            if address is None:
                self._cached.clear()
            else:
                self._cached.pop(address, None)

    def cached(self, client: NodeClient, address: str) -> NodeSupport | None:
        """The remembered answer, without asking (a slow node is not probed on a page)."""
        with self._lock:
            hit = self._cached.get(address)
        if hit is not None and self._clock() < hit[0] and hit[1] == client.epoch(address):
            return hit[2]
        return None

    async def support(self, client: NodeClient, address: str, deadline_s: float) -> NodeSupport:
        epoch = client.epoch(address)
        with self._lock:
            hit = self._cached.get(address)
        if hit is not None and self._clock() < hit[0] and hit[1] == epoch:
            return hit[2]
        return await self._flight.run(
            address, lambda: self._probe(client, address, deadline_s, epoch)
        )

    async def _probe(
        self, client: NodeClient, address: str, deadline_s: float, epoch: int
    ) -> NodeSupport:
        result = await probe_node(client, address, deadline_s=deadline_s)
        # The probe may itself have (re)connected: keep the epoch it ended in.
        epoch = max(epoch, client.epoch(address))
        if result.definitive:
            with self._lock:
                now = self._clock()
                self._cached.pop(address, None)
                self._cached[address] = (now + self.ttl_s, epoch, result)
                # Bounded like the client's channels: expired answers, then the oldest, go.
                for stale in [a for a, (until, _, _) in self._cached.items() if until <= now]:
                    del self._cached[stale]
                while len(self._cached) > client.capacity:
                    del self._cached[next(iter(self._cached))]
        return result

    async def support_of(
        self, client: NodeClient, addresses: Sequence[str], deadline_s: float
    ) -> dict[str, NodeSupport]:
        found = await asyncio.gather(*(self.support(client, a, deadline_s) for a in addresses))
        return dict(zip(addresses, found, strict=True))
