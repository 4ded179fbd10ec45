"""Fetch the cluster-wide KeyViz matrix: fan out, decode, merge, fit to the display.

No Django request here: the API views, the live poller and the tests call the
same functions. Decoding and merging are CPU work, so they run in a worker
thread and the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from cluster.client import NodeClient, NodeError, node_client
from cluster.discovery import discovery
from cluster.fanout import FanOut, Node, NodeStatus, call_node, fan_out
from elastickv_admin.config import portal_config
from keyviz.budgets import MAX_ROWS, fit_to_display
from keyviz.matrix import MalformedMatrixError, MergedMatrix, NodeMatrix, node_matrix_from_response
from keyviz.merge import Contribution, cell_contributions, merge_nodes
from keyviz.params import MatrixQuery
from proto import admin_pb2


@dataclass
class MatrixResult:
    matrix: MergedMatrix  # budgets applied
    statuses: list[NodeStatus]
    full: MergedMatrix | None = None  # before budgets, when the caller asked to keep it

    @property
    def responded(self) -> int:
        return sum(1 for s in self.statuses if s.ok)


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


def decode_matrices(
    nodes: Sequence[Node], answers: FanOut[bytes]
) -> tuple[list[NodeMatrix], list[NodeStatus]]:
    """Decode and validate each node's matrix; a malformed one fails only its node."""
    matrices: list[NodeMatrix] = []
    statuses: list[NodeStatus] = []
    for node, status in zip(nodes, answers.statuses, strict=True):
        if status.ok:
            try:
                response = admin_pb2.GetKeyVizMatrixResponse.FromString(
                    answers.results[node.address]
                )
                matrices.append(node_matrix_from_response(node.label, response))
            except (DecodeError, MalformedMatrixError) as exc:
                reason = (
                    exc.reason if isinstance(exc, MalformedMatrixError) else "not a valid protobuf"
                )
                status = NodeStatus(
                    status.node,
                    status.address,
                    False,
                    f"malformed KeyViz matrix: {reason}",
                    status.latency_ms,
                    "MALFORMED",
                )
        statuses.append(status)
    return matrices, statuses


async def group_leaders(
    client: NodeClient, nodes: Sequence[Node], statuses: Sequence[NodeStatus]
) -> dict[int, str]:
    """Raft group -> leader node id, from one node that answered (for degraded rows)."""
    for node, status in zip(nodes, statuses, strict=True):
        if status.ok:
            overview, answered = await call_node(client, node, "GetClusterOverview")
            if answered.ok and overview is not None:
                return {g.raft_group_id: g.leader_node_id for g in overview.group_leaders}
    return {}


async def _merged(query: MatrixQuery) -> tuple[MergedMatrix, list[NodeStatus]]:
    client = node_client()
    nodes = await discovery().nodes()
    answers: FanOut[bytes] = await fan_out(
        client, nodes, "GetKeyVizMatrix", matrix_request(query), raw=True
    )
    matrices, statuses = await asyncio.to_thread(decode_matrices, nodes, answers)
    failed = [s.node for s in statuses if not s.ok]
    leaders = await group_leaders(client, nodes, statuses) if failed else {}
    merged = await asyncio.to_thread(
        merge_nodes,
        matrices,
        series=query.series,
        writes_merge=portal_config().writes_merge,  # type: ignore[arg-type]
        failed_nodes=failed,
        group_leaders=leaders,
    )
    return merged, statuses


async def fetch_matrix(query: MatrixQuery) -> MatrixResult:
    merged, statuses = await _merged(query)
    shown = await asyncio.to_thread(
        fit_to_display, merged, max_rows=query.rows, max_cols=query.cols
    )
    return MatrixResult(shown, statuses)


async def fetch_bucket(query: MatrixQuery, bucket_id: str) -> BucketDetail:
    """One row at full column resolution with each node's contribution per cell, plus the
    per-adapter figures of nodes that implement GetRouteDetail."""
    merged, statuses = await _merged(query)
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


__all__ = ["BucketDetail", "MatrixResult", "NodeError", "fetch_bucket", "fetch_matrix"]
