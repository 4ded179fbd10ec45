"""Serve the cluster-wide KeyViz matrix from the store; fetch node matrices for the collector.

Page loads and the API read the tiered store the collector fills
(keyviz/store.py): no node is asked for KeyViz data when a page loads. The
per-node status served with a matrix is the collector's (its CollectorState),
with the collector's age, holder, step and last error. No state yet means no
collector has ever run: the answer is an empty matrix with `collector: null`
and a message, not an error; only a store that cannot be read is a 503.

The node-facing half (`fetch_node_matrices`, `current_leaders`) is what the
collector and the cell detail's leader lookup use. No Django request here:
the API views, the collector and the tests call the same functions. The ORM is
synchronous, so the store is read through sync_to_async; budgets run in a worker
thread and the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.db import DatabaseError

from cluster.client import NodeError
from cluster.diagnose import status_json
from cluster.fanout import Node, NodeStatus, fan_out
from cluster.runtime import discovery, node_client
from keyviz import store
from keyviz.budgets import MAX_ROWS, fit_to_display
from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT
from keyviz.lease import COLLECTOR
from keyviz.matrix import (
    Index,
    MalformedMatrixError,
    MergedMatrix,
    NodeMatrix,
    RowMeta,
    node_matrix_from_bytes,
)
from keyviz.merge import Contribution
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


# The CollectorState key the collector writes its state under (keyviz/collector.py).
COLLECTOR_STATE_KEY = COLLECTOR
NO_COLLECTOR_MESSAGE = (
    "the collector has not run yet; history starts when the portal first reaches the nodes"
)


class StoreUnavailable(Exception):
    """The KeyViz store could not be read (the API answers 503 with the reason)."""


@dataclass
class MatrixResult:
    matrix: MergedMatrix  # budgets applied
    nodes: list[dict[str, Any]]  # the collector's per-node status
    collector: dict[str, Any] | None  # None: no collector has run yet
    tier: int
    tier_step_ms: int  # step of the stored columns read (before the column budget)
    missing_nodes: dict[str, list[str]] = field(default_factory=dict)  # see missing_by_column
    message: str | None = None  # for the page, e.g. NO_COLLECTOR_MESSAGE


@dataclass
class BucketDetail:
    matrix: MergedMatrix  # full column resolution, no budgets
    bucket_id: str
    contributions: list[Contribution]
    per_adapter: dict[str, list[admin_pb2.AdapterSummary]] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # the collector's node status
    tier: int = 0
    per_node: bool = True  # False on coarse tiers: only merged values are kept there


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


async def _decode_on_arrival(
    node: Node, data: Any, status: NodeStatus
) -> tuple[NodeMatrix | None, NodeStatus]:
    # In a worker thread as soon as it arrives: the decoding of the first answers overlaps
    # the wait for the slowest node.
    return await asyncio.to_thread(decode_node_matrix, node, status, data)


async def fetch_node_matrices(
    nodes: Sequence[Node], requests: Sequence[admin_pb2.GetKeyVizMatrixRequest]
) -> list[tuple[NodeMatrix | None, NodeStatus]]:
    """`requests[i]` to `nodes[i]`, all at once through the one fan-out; one (matrix or
    None, status) per entry."""
    result = await fan_out(
        node_client(),
        nodes,
        "GetKeyVizMatrix",
        requests,
        raw=True,
        on_arrival=_decode_on_arrival,
    )
    return result.answers


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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _node_status(node: str, raw: object) -> dict[str, Any]:
    """One node's status from the collector's state, in the one per-node status shape
    (cluster/diagnose.py status_json; a state written by an older version lacks fields:
    they are null); the diagnosis is made here, not read from the state. Other plain
    fields (the collector's last_column_ms, lag_ms, streaming) pass."""
    doc = raw if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {
        k: v
        for k, v in doc.items()
        if isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
    }
    name = _text(doc.get("node")) or node
    reachable = doc.get("reachable")
    latency = doc.get("latency_ms")
    status = NodeStatus(
        name,
        _text(doc.get("address")) or name,
        doc.get("ok") is True,
        _text(doc.get("error")),
        float(latency)
        if isinstance(latency, int | float) and not isinstance(latency, bool)
        else None,
        _text(doc.get("code")),
        state=_text(doc.get("state")),
        last_seen_ms=_int(doc.get("last_seen_ms")),
        as_of_ms=_int(doc.get("as_of_ms")),
        reachable=reachable if isinstance(reachable, bool) else None,
        detail=_text(doc.get("detail")),
    )
    return out | status_json(status, keyviz=True)


def collector_status(
    state: Mapping[str, Any] | None, now_ms: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(per-node status, collector summary) from the collector's persisted state.

    Reads `status` (the list of node statuses), `holder`, `step_ms`,
    `heartbeat_ms`, `last_error` and `started_ms`; anything missing or of the
    wrong type is left out rather than trusted. None state: no collector has run.
    """
    if state is None:
        return [], None
    raw_nodes = state.get("status")
    nodes = [_node_status("", v) for v in raw_nodes] if isinstance(raw_nodes, list) else []
    nodes = [n for n in nodes if n["node"]]
    heartbeat = _int(state.get("heartbeat_ms"))
    return nodes, {
        "age_ms": None if heartbeat is None else max(0, now_ms - heartbeat),
        "holder": _text(state.get("holder")),
        "step_ms": _int(state.get("step_ms")),
        "last_error": _text(state.get("last_error")),
        "started_unix_ms": _int(state.get("started_ms")),
    }


def missing_by_column(
    base_times: Sequence[int], missing: Sequence[Sequence[str]], shown_times: Sequence[int]
) -> dict[str, list[str]]:
    """{"<shown column ms>": nodes} for the displayed columns some node did not report.

    `missing` is per stored column (aligned with `base_times`); a displayed column
    built by the column budget covers the stored columns after the previous displayed
    one up to its own time, and lists every node any of them lacked.
    """
    shown = np.asarray(shown_times, dtype=np.int64)
    out: dict[str, set[str]] = {}
    for t, nodes in zip(base_times, missing, strict=True):
        if not nodes:
            continue
        i = int(np.searchsorted(shown, t, side="left"))
        if i < shown.shape[0]:
            out.setdefault(str(int(shown[i])), set()).update(str(n) for n in nodes)
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class _Read:
    matrix: MergedMatrix
    tier: int
    tier_step_ms: int
    missing: Sequence[Sequence[str]]
    state: Mapping[str, Any] | None


def _read_store(query: MatrixQuery) -> _Read:
    """The window's matrix and the collector's state from the store, in one DB visit."""
    stored = store.read_matrix(
        query.series, query.from_unix_ms, query.to_unix_ms, tier=query.tier, contributors=False
    )
    state = store.load_state(COLLECTOR_STATE_KEY)
    return _Read(stored.matrix, stored.tier, stored.step_ms, stored.missing, state)


async def fetch_matrix(
    query: MatrixQuery, clock: Stopwatch | None = None, *, now_ms: int | None = None
) -> MatrixResult:
    """The matrix of a window from the store (no node is asked), cut to the key range and
    fitted to the display. StoreUnavailable when the store cannot be read."""
    clock = clock or Stopwatch()
    try:
        read = await sync_to_async(_read_store)(query)
    except (store.StoreError, DatabaseError) as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
    clock.lap("store")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    nodes, collector = collector_status(read.state, now)
    matrix = read.matrix
    tier_step = read.tier_step_ms
    if not matrix.shape[1] and read.tier == 0 and collector and collector["step_ms"]:
        # Nothing stored in the window: the nodes' step is the collector's, not a default.
        tier_step = collector["step_ms"]
        matrix = replace(matrix, step_ms=tier_step)
    if query.key_range:
        # Before the budgets: a zoom into a key range is re-bucketed, not magnified.
        matrix = restrict_to_key_range(matrix, query.start_key, query.end_key)
    shown = await asyncio.to_thread(
        fit_to_display, matrix, max_rows=query.rows, max_cols=query.cols
    )
    missing = missing_by_column(
        matrix.column_unix_ms.tolist(), read.missing, shown.column_unix_ms.tolist()
    )
    clock.lap("fit")
    return MatrixResult(
        matrix=shown,
        nodes=nodes,
        collector=collector,
        tier=read.tier,
        tier_step_ms=tier_step,
        missing_nodes=missing,
        message=None if read.state is not None else NO_COLLECTOR_MESSAGE,
    )


def bucket_detail_from_history(
    history: store.BucketHistory,
) -> tuple[MergedMatrix, list[Contribution]]:
    """The stored history of one bucket as a one-row matrix plus each node's non-zero
    cells (raw node columns, fine tier only). KeyError: no such row in the window."""
    if history.row is None or not (history.values.any() or history.flags.any()):
        raise KeyError(history.bucket_id)
    flags = history.flags
    one = (1, int(history.column_unix_ms.shape[0]))
    matrix = MergedMatrix(
        series=history.series,
        step_ms=history.step_ms,
        column_unix_ms=history.column_unix_ms,
        rows=(history.row,),
        values=history.values.reshape(one),
        soft=((flags & FLAG_SOFT) != 0).reshape(one),
        conflict=((flags & FLAG_CONFLICT) != 0).reshape(one),
        degraded=np.zeros(one, dtype=np.bool_),
        unknown=history.unknown.reshape(one),
    )
    times = history.column_unix_ms.tolist()
    contributions = [
        Contribution(
            node=n.node,
            bucket_id=history.bucket_id,
            column_unix_ms=int(times[j]),
            node_column_unix_ms=int(n.node_column_ms[j]),
            value=int(n.values[j]),
            raft_group_id=int(n.raft_group_ids[j]),
            leader_term=int(n.leader_terms[j]),
            soft=bool(n.soft[j]),
        )
        for n in history.nodes
        for j in np.flatnonzero(n.values).tolist()
    ]
    contributions.sort(key=lambda c: (c.column_unix_ms, c.node))
    return matrix, contributions


def _read_bucket(
    query: MatrixQuery, bucket_id: str
) -> tuple[store.BucketHistory, Mapping[str, Any] | None]:
    history = store.read_bucket(
        query.series, bucket_id, query.from_unix_ms, query.to_unix_ms, tier=query.tier
    )
    return history, store.load_state(COLLECTOR_STATE_KEY)


async def fetch_bucket(query: MatrixQuery, bucket_id: str) -> BucketDetail:
    """One row at full column resolution from the store with each node's contribution per
    cell (raw node columns, kept for the fine tier), plus the per-adapter figures of
    nodes that implement GetRouteDetail (route detail, not KeyViz data: asked on a cell
    click only). KeyError: no such row in the window."""
    try:
        history, state = await sync_to_async(_read_bucket)(query, bucket_id)
    except (store.StoreError, DatabaseError) as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
    matrix, contributions = bucket_detail_from_history(history)
    nodes, _ = collector_status(state, int(time.time() * 1000))
    client = node_client()
    known = await discovery().nodes()
    request = admin_pb2.GetRouteDetailRequest(
        bucket_id=bucket_id, from_unix_ms=query.from_unix_ms, to_unix_ms=query.to_unix_ms
    )
    details = await fan_out(client, known, "GetRouteDetail", request)
    per_adapter = {
        n.label: list(details.results[n.address].per_adapter)
        for n in known
        if n.address in details.results
    }
    return BucketDetail(
        matrix,
        bucket_id,
        contributions,
        per_adapter,
        nodes,
        tier=history.tier,
        per_node=history.per_node,
    )


async def current_leaders(*, max_age_s: float | None = None) -> dict[int, tuple[str, int]]:
    """Raft group -> (leader node id, term), as the seed that answered discovery's last
    GetClusterOverview named them (discovery owns that call; ``max_age_s`` asks it for one
    no older than that); {} when no seed answered it now. For the cell detail and the
    collector."""
    membership = await discovery().membership(max_age_s=max_age_s)
    return dict(membership.leaders) if membership.source else {}


__all__ = [
    "COLLECTOR_STATE_KEY",
    "NO_COLLECTOR_MESSAGE",
    "BucketDetail",
    "MatrixResult",
    "NodeError",
    "Stopwatch",
    "StoreUnavailable",
    "collector_status",
    "current_leaders",
    "decode_node_matrix",
    "fetch_bucket",
    "fetch_matrix",
    "fetch_node_matrices",
    "restrict_to_key_range",
    "rows_in_key_range",
]
