"""Fetch the cluster-wide KeyViz matrix: fan out, decode, merge, fit to the display.

No Django request here: the API views, the live poller and the tests call the
same functions. Decoding and merging are CPU work, so they run in a worker
thread and the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cluster.client import NodeError, node_client
from cluster.discovery import discovery
from cluster.fanout import Node, NodeStatus, NodeStatusSummary, call_node, fan_out
from elastickv_admin import metrics
from elastickv_admin.config import portal_config
from keyviz.budgets import MAX_ROWS, fit_to_display
from keyviz.matrix import (
    Index,
    MalformedMatrixError,
    MergedMatrix,
    NodeMatrix,
    RowMeta,
    node_matrix_from_bytes,
)
from keyviz.merge import Contribution, cell_contributions, merge_nodes
from keyviz.params import MatrixQuery
from proto import admin_pb2
from proto.wire import WireDecodeError


class Stopwatch:
    """Named phases of one request in ms, for the Server-Timing header (browser devtools
    and the page benchmark show where a slow load spent its time)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + (now - self._last) * 1000
        self._last = now

    def server_timing(self) -> str:
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self.phases.items())


@dataclass
class MatrixResult(NodeStatusSummary):
    matrix: MergedMatrix  # budgets applied
    statuses: list[NodeStatus]


@dataclass
class BucketDetail:
    matrix: MergedMatrix  # full column resolution, no budgets
    bucket_id: str
    contributions: list[Contribution]
    per_adapter: dict[str, list[admin_pb2.AdapterSummary]] = field(default_factory=dict)
    statuses: list[NodeStatus] = field(default_factory=list)


def matrix_request(query: MatrixQuery) -> admin_pb2.GetKeyVizMatrixRequest:
    # Nodes are asked for their full budget: a row hot across the cluster but
    # middling on each node must survive each node's own cut (DESIGN step 7).
    return admin_pb2.GetKeyVizMatrixRequest(
        series=query.series,  # type: ignore[arg-type]
        from_unix_ms=query.from_unix_ms,
        to_unix_ms=query.to_unix_ms,
        rows=MAX_ROWS,
    )


def decode_node_matrix(
    node: Node, status: NodeStatus, data: bytes
) -> tuple[NodeMatrix | None, NodeStatus]:
    """One node's answer straight to a validated NodeMatrix (proto/wire.py: no protobuf
    message is built), or its status turned MALFORMED: a bad matrix fails only its node."""
    try:
        return node_matrix_from_bytes(node.label, data), status
    except (WireDecodeError, MalformedMatrixError) as exc:
        reason = (
            exc.reason
            if isinstance(exc, MalformedMatrixError)
            else f"not a valid protobuf ({exc.reason})"
        )
        failed = NodeStatus(
            status.node,
            status.address,
            False,
            f"malformed KeyViz matrix: {reason}",
            status.latency_ms,
            "MALFORMED",
        )
        return None, failed


async def fetch_node_matrix(
    node: Node, request: admin_pb2.GetKeyVizMatrixRequest
) -> tuple[NodeMatrix | None, NodeStatus]:
    """GetKeyVizMatrix on one node, decoded in a worker thread as soon as it arrives:
    the decoding of the first answers overlaps the wait for the slowest node."""
    data, status = await call_node(node_client(), node, "GetKeyVizMatrix", request, raw=True)
    if data is None:
        return None, status
    return await asyncio.to_thread(decode_node_matrix, node, status, data)


async def fetch_node_matrices(
    nodes: Sequence[Node], requests: Sequence[admin_pb2.GetKeyVizMatrixRequest]
) -> list[tuple[NodeMatrix | None, NodeStatus]]:
    """`requests[i]` to `nodes[i]`, all at once; one (matrix or None, status) per node."""
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(fetch_node_matrix(n, r) for n, r in zip(nodes, requests, strict=True))
    )
    metrics.FANOUT_SECONDS.labels("GetKeyVizMatrix").observe(time.perf_counter() - started)
    return answers


async def _merged(query: MatrixQuery, clock: Stopwatch) -> tuple[MergedMatrix, list[NodeStatus]]:
    nodes = await discovery().nodes()
    answers = await fetch_node_matrices(nodes, [matrix_request(query)] * len(nodes))
    matrices = [m for m, _ in answers if m is not None]
    statuses = [status for _, status in answers]
    failed = [s.node for s in statuses if not s.ok]
    # Degraded rows name the leader of their group, from a node that answered.
    answered = [n for n, s in zip(nodes, statuses, strict=True) if s.ok]
    leaders = (
        {g: leader for g, (leader, _) in (await current_leaders(answered)).items()}
        if failed
        else {}
    )
    clock.lap("nodes")
    merged = await asyncio.to_thread(
        merge_nodes,
        matrices,
        series=query.series,
        step_ms=query.step_ms,  # None: inferred from the columns
        writes_merge=portal_config().writes_merge,  # type: ignore[arg-type]
        failed_nodes=failed,
        group_leaders=leaders,
    )
    clock.lap("merge")
    return merged, statuses


def rows_in_key_range(rows: Sequence[RowMeta], start_key: bytes, end_key: bytes) -> Index:
    """Indexes of the rows whose [start, end) meets [start_key, end_key).

    Empty `start` / `start_key` is the smallest key, empty `end` / `end_key` is
    +infinity (as on the wire). Rows of different generations may overlap (a
    split route and its children both appear in a window), so the result need
    not be one run.
    """
    keep = [
        i
        for i, row in enumerate(rows)
        if (not end_key or row.start < end_key) and (not row.end or row.end > start_key)
    ]
    return np.array(keep, dtype=np.intp)


def restrict_to_key_range(m: MergedMatrix, start_key: bytes, end_key: bytes) -> MergedMatrix:
    """Only the rows that meet [start_key, end_key), before any budget.

    The provenance follows (base rows and every node's aligned cells are cut to
    the kept rows), so cell contributions still resolve. Meant for a matrix
    straight from the merge; a budgeted one loses its provenance.
    """
    keep = rows_in_key_range(m.rows, start_key, end_key)
    n = len(m.rows)
    if keep.shape[0] == n:
        return m
    prov = m.provenance
    if prov is not None and len(prov.base_rows) == n and prov.row_edges.shape[0] == n + 1:
        position = np.full(n, -1, dtype=np.intp)
        position[keep] = np.arange(keep.shape[0], dtype=np.intp)
        nodes = []
        for a in prov.nodes:
            mine = position[a.row_index] >= 0
            nodes.append(
                replace(
                    a,
                    row_index=position[a.row_index[mine]],
                    values=a.values[mine],
                    soft=a.soft[mine],
                    raft_group_ids=a.raft_group_ids[mine],
                    leader_terms=a.leader_terms[mine],
                )
            )
        prov = replace(
            prov,
            base_rows=tuple(prov.base_rows[i] for i in keep.tolist()),
            nodes=tuple(nodes),
            row_edges=np.arange(keep.shape[0] + 1, dtype=np.intp),
        )
    else:
        prov = None
    return replace(
        m,
        rows=tuple(m.rows[i] for i in keep.tolist()),
        values=m.values[keep],
        soft=m.soft[keep],
        conflict=m.conflict[keep],
        degraded=m.degraded[keep],
        unknown=None if m.unknown is None else m.unknown[keep],
        provenance=prov,
    )


async def fetch_matrix(query: MatrixQuery, clock: Stopwatch | None = None) -> MatrixResult:
    clock = clock or Stopwatch()
    merged, statuses = await _merged(query, clock)
    if query.key_range:
        # Before the budgets: a zoom into a key range is re-bucketed, not magnified.
        merged = restrict_to_key_range(merged, query.start_key, query.end_key)
    shown = await asyncio.to_thread(
        fit_to_display, merged, max_rows=query.rows, max_cols=query.cols
    )
    clock.lap("fit")
    return MatrixResult(shown, statuses)


async def fetch_bucket(query: MatrixQuery, bucket_id: str) -> BucketDetail:
    """One row at full column resolution with each node's contribution per cell, plus the
    per-adapter figures of nodes that implement GetRouteDetail."""
    merged, statuses = await _merged(query, Stopwatch())
    contributions = cell_contributions(merged, bucket_id)  # KeyError: unknown bucket
    client = node_client()
    nodes = await discovery().nodes()
    request = admin_pb2.GetRouteDetailRequest(
        bucket_id=bucket_id, from_unix_ms=query.from_unix_ms, to_unix_ms=query.to_unix_ms
    )
    details = await fan_out(client, nodes, "GetRouteDetail", request)
    per_adapter = {
        n.label: list(details.results[n.address].per_adapter)
        for n in nodes
        if n.address in details.results
    }
    return BucketDetail(merged, bucket_id, contributions, per_adapter, statuses)


async def current_leaders(nodes: Sequence[Node] | None = None) -> dict[int, tuple[str, int]]:
    """Raft group -> (leader node id, term) from the first node that answers
    GetClusterOverview; {} when none does. For the cell detail and the live poller."""
    client = node_client()
    for node in nodes if nodes is not None else await discovery().nodes():
        overview, status = await call_node(client, node, "GetClusterOverview")
        if status.ok and overview is not None:
            return {
                g.raft_group_id: (g.leader_node_id, g.leader_term) for g in overview.group_leaders
            }
    return {}


__all__ = [
    "BucketDetail",
    "MatrixResult",
    "NodeError",
    "Stopwatch",
    "current_leaders",
    "decode_node_matrix",
    "fetch_bucket",
    "fetch_matrix",
    "fetch_node_matrices",
    "restrict_to_key_range",
    "rows_in_key_range",
]
