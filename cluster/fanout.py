"""Call every known node in parallel and report a status per node.

One slow node costs at most its deadline, never the sum; a failure is a status
row, never an exception, so pages can show "2 of 3 nodes responded".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar, overload

from google.protobuf.message import Message

from cluster.client import NodeClient, NodeError
from cluster.tokens import NodeToken
from elastickv_admin.lib import metrics

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
    # (answer or None, status) per entry of the nodes asked, in their order.
    answers: list[tuple[T | None, NodeStatus]] = field(default_factory=list)

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


@dataclass(frozen=True)
class Exactly:
    """Call with exactly this token (None: no authorization): no fallback, nothing
    remembered (NodeClient.call_with_token). For probes that ask which token a node takes."""

    token: NodeToken | None


@dataclass(frozen=True)
class PageBudget:
    """How long a page waits for a fan-out. Nodes in ``skip`` (address -> why, e.g. the
    health check found them slow) are not asked: their call would hold the page."""

    seconds: float
    skip: Mapping[str, str] = field(default_factory=dict)

    def waiting(self, node: Node, why: str) -> NodeStatus:
        return NodeStatus(
            node.label,
            node.address,
            False,
            f"{why}: not asked within the page's {self.seconds:g} s budget"
            if why
            else f"no answer within the page's {self.seconds:g} s budget",
            None,
            WAITING,
            state="waiting",
        )


# What runs on each answer as it arrives (e.g. decoding it in a worker thread while the
# slowest node is still awaited); it may turn the answer into a failure (MALFORMED).
OnArrival = Callable[[Node, Any, NodeStatus], Awaitable[tuple[Any, NodeStatus]]]


async def call_node(
    client: NodeClient,
    node: Node,
    method: str,
    request: Message | None = None,
    validate: Callable[[Any], T] | None = None,
    *,
    raw: bool = False,
    exactly: Exactly | None = None,
    deadline_s: float | None = None,
) -> tuple[T | None, NodeStatus]:
    started = time.perf_counter()
    try:
        if exactly is not None:
            response = await client.call_with_token(
                node.address, method, exactly.token, request, deadline_s=deadline_s
            )
        else:
            response = await client.call(
                node.address, method, request, deadline_s=deadline_s, raw=raw
            )
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


Requests = Message | Sequence[Message] | None


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Requests = None,
    validate: None = None,
    *,
    raw: bool = False,
    on_arrival: OnArrival | None = None,
    budget: PageBudget | None = None,
    exactly: Exactly | None = None,
    deadline_s: float | None = None,
) -> FanOut[Any]: ...


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Requests,
    validate: Callable[[Any], T],
    *,
    raw: bool = False,
    on_arrival: OnArrival | None = None,
    budget: PageBudget | None = None,
    exactly: Exactly | None = None,
    deadline_s: float | None = None,
) -> FanOut[T]: ...


@overload
async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Requests = None,
    *,
    validate: Callable[[Any], T],
    raw: bool = False,
    on_arrival: OnArrival | None = None,
    budget: PageBudget | None = None,
    exactly: Exactly | None = None,
    deadline_s: float | None = None,
) -> FanOut[T]: ...


async def fan_out(
    client: NodeClient,
    nodes: Sequence[Node],
    method: str,
    request: Requests = None,
    validate: Callable[[Any], T] | None = None,
    *,
    raw: bool = False,
    on_arrival: OnArrival | None = None,
    budget: PageBudget | None = None,
    exactly: Exactly | None = None,
    deadline_s: float | None = None,
) -> FanOut[T]:
    """``method`` on every node at once; one answer and status per entry of ``nodes``, in
    order (a node may appear more than once, e.g. once per KeyViz series).

    - ``request``: one for every node, or a sequence with one per node (aligned);
    - ``validate`` may turn a response into T or raise MalformedResponse, which marks only
      that node failed; ``raw`` keeps the responses as bytes (see NodeClient.call);
    - ``on_arrival`` runs on each answer as soon as it arrives (see OnArrival);
    - ``budget``: the page waits at most its seconds; a node still not answering is
      "waiting" (its call is cancelled) and the nodes it skips are not asked;
    - ``exactly`` / ``deadline_s``: see Exactly and NodeClient.call."""
    per_node: list[Message | None] = (
        list(request) if isinstance(request, Sequence) else [request] * len(nodes)
    )
    if len(per_node) != len(nodes):
        raise ValueError(f"{len(per_node)} requests for {len(nodes)} nodes")
    skip = budget.skip if budget is not None else {}

    async def one(node: Node, req: Message | None) -> tuple[Any, NodeStatus]:
        value, status = await call_node(
            client, node, method, req, validate, raw=raw, exactly=exactly, deadline_s=deadline_s
        )
        if on_arrival is not None and value is not None:
            return await on_arrival(node, value, status)
        return value, status

    started = time.perf_counter()
    tasks = [
        None if n.address in skip else asyncio.ensure_future(one(n, r))
        for n, r in zip(nodes, per_node, strict=True)
    ]
    running = [t for t in tasks if t is not None]
    if running:
        _, late = await asyncio.wait(running, timeout=budget.seconds if budget else None)
        for pending in late:
            pending.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    metrics.FANOUT_SECONDS.labels(method).observe(time.perf_counter() - started)
    result: FanOut[T] = FanOut()
    for node, task in zip(nodes, tasks, strict=True):
        if task is None or task.cancelled():
            assert budget is not None
            value, status = None, budget.waiting(node, skip.get(node.address, ""))
        else:
            value, status = task.result()
        result.answers.append((value, status))
        result.statuses.append(status)
        if status.ok:
            result.results[node.address] = value  # type: ignore[assignment]
    return result
