"""Call every known node in parallel and report a status per node.

One slow node costs at most its deadline, never the sum; a failure is a status
row, never an exception, so pages can show "2 of 3 nodes responded".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar, overload

from google.protobuf.message import Message

from cluster.client import NodeClient, NodeError
from elastickv_admin import metrics

T = TypeVar("T")
WAITING = "WAITING"  # a NodeStatus code: asked, no answer within the page's budget yet


@dataclass(frozen=True)
class Node:
    node_id: str  # empty when only the address is known (a seed that never answered)
    address: str

    @property
    def label(self) -> str:
        return self.node_id or self.address


@dataclass
class NodeStatus:
    node: str
    address: str
    ok: bool
    error: str | None = None
    latency_ms: float | None = None
    code: str | None = None
    # The health check's verdict (cluster/services.py): up, slow, waiting (no answer within
    # the page budget yet) or down; None where a call is not a health check.
    state: str | None = None
    # When this node last answered (unix ms); for a slow node's data, when it was taken.
    last_seen_ms: int | None = None
    as_of_ms: int | None = None
    # False: no answer came from the node (connection failed, deadline passed); None: not
    # asked yet. ``detail``: the node's own words on a failure (untrusted, capped).
    reachable: bool | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MalformedResponse(ValueError):
    """A node answered, but what it sent breaks the contract."""


class NodeStatusSummary:
    """ "N of M nodes responded" for anything that carries one status per node."""

    statuses: Sequence[NodeStatus]

    @property
    def responded(self) -> int:
        return sum(1 for s in self.statuses if s.ok)

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def failed(self) -> list[NodeStatus]:
        return [s for s in self.statuses if not s.ok and s.code != WAITING]

    @property
    def waiting(self) -> list[NodeStatus]:
        """Nodes still being waited for (their answer fills in the page later)."""
        return [s for s in self.statuses if s.code == WAITING]

    @property
    def slow(self) -> list[NodeStatus]:
        return [s for s in self.statuses if s.state == "slow"]


@dataclass
class FanOut(NodeStatusSummary, Generic[T]):
    results: dict[str, T] = field(default_factory=dict)  # by address, only the nodes that answered
    statuses: list[NodeStatus] = field(default_factory=list)

    def status_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.statuses]


def failed_status(node: Node, exc: NodeError, latency_ms: float | None) -> NodeStatus:
    """A failed call as a node status, keeping the error's structure."""
    return NodeStatus(
        node.label,
        node.address,
        False,
        exc.message,
        latency_ms,
        exc.code,
        reachable=exc.reachable,
        detail=exc.detail or None,
    )


async def call_node(
    client: NodeClient,
    node: Node,
    method: str,
    request: Message | None = None,
    validate: Callable[[Any], T] | None = None,
    *,
    raw: bool = False,
) -> tuple[T | None, NodeStatus]:
    started = time.perf_counter()
    try:
        response = await client.call(node.address, method, request, raw=raw)
        value: Any = validate(response) if validate else response
    except NodeError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return None, failed_status(node, exc, round(elapsed, 2))
    except MalformedResponse as exc:
        elapsed = (time.perf_counter() - started) * 1000
        status = NodeStatus(
            node.label,
            node.address,
            False,
            f"malformed response: {exc}",
            round(elapsed, 2),
            "MALFORMED",
            reachable=True,
        )
        return None, status
    elapsed = (time.perf_counter() - started) * 1000
    return value, NodeStatus(
        node.label, node.address, True, None, round(elapsed, 2), reachable=True
    )


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Message | None = None,
    validate: None = None,
    *,
    raw: bool = False,
) -> FanOut[Any]: ...


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Message | None,
    validate: Callable[[Any], T],
    *,
    raw: bool = False,
) -> FanOut[T]: ...


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Message | None = None,
    *,
    validate: Callable[[Any], T],
    raw: bool = False,
) -> FanOut[T]: ...


async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Message | None = None,
    validate: Callable[[Any], T] | None = None,
    *,
    raw: bool = False,
) -> FanOut[T]:
    """``method`` on every node at once; ``validate`` may turn a response into T or
    raise MalformedResponse, which marks only that node failed. ``raw`` keeps the
    responses as bytes (see NodeClient.call)."""
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(call_node(client, n, method, request, validate, raw=raw) for n in nodes)
    )
    metrics.FANOUT_SECONDS.labels(method).observe(time.perf_counter() - started)
    result: FanOut[T] = FanOut()
    for node, (value, status) in zip(nodes, answers, strict=True):
        result.statuses.append(status)
        if status.ok:
            result.results[node.address] = value  # type: ignore[assignment]
    return result
