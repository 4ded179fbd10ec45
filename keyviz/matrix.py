"""KeyViz matrices as numpy arrays: one node's validated matrix and the merged one.

`node_matrix_from_bytes` (the API's path: raw response bytes, decoded by
proto/wire.py straight into arrays) and `node_matrix_from_response` (a parsed
message) are the doors from the wire into the merge: both check one node's
GetKeyVizMatrixResponse against CONTRACT.md and raise `MalformedMatrixError`
with the same human reason when it does not hold, so the caller can mark that
node failed and still merge the others. Bytes protobuf could not parse raise
proto.wire.WireDecodeError (a protobuf DecodeError) instead.

Values are uint64 on the wire and stay uint64 here; nothing is summed in
floating point. Raft group ids and leader terms are kept in the narrowest
unsigned type that holds every one of a node's (uint8 or uint16 nearly always,
uint32 or uint64 when they need it), which cuts the memory and the work of
comparing them in the write merge; code that builds a NodeMatrix may pass any
unsigned type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from proto import admin_pb2
from proto.wire import KeyVizMatrixWire, Ragged, RowHeader, decode_keyviz_matrix

U64 = NDArray[np.uint64]
# Raft group ids and leader terms: any unsigned type (narrowest that fits, from the wire).
Ids = NDArray[np.unsignedinteger[Any]]
_ID_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)
I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]
Index = NDArray[np.intp]
T = TypeVar("T", bound=np.generic)


class MalformedMatrixError(ValueError):
    """A node's matrix breaks the contract; `reason` says how, for the node status."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RowMeta:
    """Everything about a row except its cells.

    `member_bucket_ids` is empty for rows as nodes send them; the row budget
    fills it for the aggregate rows it builds (see budgets.py).
    """

    bucket_id: str
    start: bytes = b""
    end: bytes = b""
    label: str = ""
    aggregate: bool = False
    route_ids: tuple[int, ...] = ()
    route_ids_truncated: bool = False
    route_count: int = 0
    lineage_id: str = ""
    member_bucket_ids: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class NodeMatrix:
    """One node's matrix after validation: R rows x C columns.

    `raft_group_ids` and `leader_terms` are zero where the node sent none
    (0 means unknown in the contract). `step_ms` is a declared step (from
    settings); None means "infer it from the column spacing".
    """

    node: str
    column_unix_ms: I64
    rows: tuple[RowMeta, ...]
    values: U64
    soft: Bools
    raft_group_ids: Ids
    leader_terms: Ids
    step_ms: int | None = None
    # Maxima, computed once here: they bound every sum and pick the key width
    # the write merge compares in.
    value_max: int = field(init=False)
    group_max: int = field(init=False)
    term_max: int = field(init=False)

    def __post_init__(self) -> None:
        validate_node_matrix(self)
        object.__setattr__(self, "value_max", int(self.values.max(initial=0)))
        object.__setattr__(self, "group_max", int(self.raft_group_ids.max(initial=0)))
        object.__setattr__(self, "term_max", int(self.leader_terms.max(initial=0)))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.column_unix_ms.shape[0]))


def validate_node_matrix(m: NodeMatrix) -> None:
    """Check shapes, dtypes, column order and step; raise MalformedMatrixError."""
    cols = m.column_unix_ms
    if cols.ndim != 1 or cols.dtype != np.int64:
        raise MalformedMatrixError("column_unix_ms must be a 1-D int64 array")
    if m.step_ms is not None and m.step_ms <= 0:
        raise MalformedMatrixError(f"step {m.step_ms} ms is not positive")
    if cols.shape[0] > 1:
        bad = np.flatnonzero(np.diff(cols) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise MalformedMatrixError(
                f"column timestamps not strictly increasing at index {i} "
                f"({int(cols[i - 1])} then {int(cols[i])})"
            )
    shape = m.shape
    for name, arr, dtypes in (
        ("values", m.values, (np.uint64,)),
        ("soft", m.soft, (np.bool_,)),
        ("raft_group_ids", m.raft_group_ids, _ID_TYPES),
        ("leader_terms", m.leader_terms, _ID_TYPES),
    ):
        if arr.shape != shape or arr.dtype not in dtypes:
            expected = " or ".join(str(np.dtype(d)) for d in dtypes)
            raise MalformedMatrixError(
                f"{name} has shape {arr.shape} {arr.dtype}, expected {shape} {expected}"
            )
    seen: set[str] = set()
    for row in m.rows:
        if not row.bucket_id:
            raise MalformedMatrixError("a row has an empty bucket_id")
        if row.bucket_id in seen:
            raise MalformedMatrixError(f"bucket_id {row.bucket_id} appears twice")
        seen.add(row.bucket_id)


def _row_meta(row: admin_pb2.KeyVizRow) -> RowMeta:
    return RowMeta(
        bucket_id=row.bucket_id,
        start=row.start,
        end=row.end,
        label=row.label,
        aggregate=row.aggregate,
        route_ids=tuple(row.route_ids),
        route_ids_truncated=row.route_ids_truncated,
        route_count=row.route_count,
        lineage_id=row.lineage_id,
    )


def _optional_per_cell(
    rows: list[admin_pb2.KeyVizRow], attr: str, n_cols: int, dtype: type[T]
) -> NDArray[T]:
    """Stack an "empty or exactly one per column" list field; absent rows become 0."""
    full = [i for i, row in enumerate(rows) if len(getattr(row, attr))]
    # upb containers implement __array__, so one np.array call decodes them all.
    if full and len(full) == len(rows):
        decoded: NDArray[T] = np.array([getattr(row, attr) for row in rows], dtype=dtype)
        return decoded
    out = np.zeros((len(rows), n_cols), dtype=dtype)
    if full:
        out[full] = np.array([getattr(rows[i], attr) for i in full], dtype=dtype)
    return out


def _narrow(ids: Ids) -> Ids:
    """The narrowest unsigned type every id fits in: the write merge reads fewer bytes."""
    top = int(ids.max(initial=0))
    for t in _ID_TYPES:
        if top <= np.iinfo(t).max:
            return ids if ids.dtype == t else ids.astype(t)
    return ids


def node_matrix_from_response(
    node: str, response: admin_pb2.GetKeyVizMatrixResponse, *, step_ms: int | None = None
) -> NodeMatrix:
    """Validate one node's response and turn it into arrays.

    Raises MalformedMatrixError when lengths disagree (values vs columns,
    partial raft_group_ids / leader_terms / soft_columns), columns are
    unsorted or duplicated, bucket ids repeat, or the declared step is not
    positive.
    """
    if step_ms is not None and step_ms <= 0:
        raise MalformedMatrixError(f"step {step_ms} ms is not positive")
    n_cols = len(response.column_unix_ms)
    rows = list(response.rows)
    for row in rows:
        n_values = len(row.values)
        if n_values != n_cols:
            raise MalformedMatrixError(
                f"row {row.bucket_id}: {n_values} values but {n_cols} columns"
            )
        for attr in ("raft_group_ids", "leader_terms", "soft_columns"):
            n = len(getattr(row, attr))
            if n not in (0, n_values):
                raise MalformedMatrixError(
                    f"row {row.bucket_id}: {attr} has {n} entries, values has {n_values}"
                )
    columns = np.array(response.column_unix_ms, dtype=np.int64)
    if rows and n_cols:
        values = np.array([row.values for row in rows], dtype=np.uint64)
    else:
        values = np.zeros((len(rows), n_cols), dtype=np.uint64)
    return NodeMatrix(
        node=node,
        column_unix_ms=columns,
        rows=tuple(_row_meta(row) for row in rows),
        values=values,
        soft=_optional_per_cell(rows, "soft_columns", n_cols, np.bool_),
        raft_group_ids=_narrow(_optional_per_cell(rows, "raft_group_ids", n_cols, np.uint64)),
        leader_terms=_narrow(_optional_per_cell(rows, "leader_terms", n_cols, np.uint64)),
        step_ms=step_ms,
    )


def _first_bad_row(wire: KeyVizMatrixWire) -> str | None:
    """node_matrix_from_response's reason for the first row whose list lengths break the
    contract, checked in the same order; None when every row holds."""
    n_cols = wire.column_unix_ms.shape[0]
    n_values = wire.values.counts
    optional = (
        ("raft_group_ids", wire.raft_group_ids.counts),
        ("leader_terms", wire.leader_terms.counts),
        ("soft_columns", wire.soft_columns.counts),
    )
    bad = n_values != n_cols
    for _, counts in optional:
        bad |= (counts != 0) & (counts != n_values)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    row, n = wire.rows[i], int(n_values[i])
    if n != n_cols:
        return f"row {row.bucket_id}: {n} values but {n_cols} columns"
    for attr, counts in optional:
        if int(counts[i]) not in (0, n):
            return f"row {row.bucket_id}: {attr} has {int(counts[i])} entries, values has {n}"
    raise AssertionError("unreachable")  # pragma: no cover


def _cells(lists: Ragged, n_rows: int, n_cols: int, dtype: type[T]) -> NDArray[T]:
    """[rows, columns] of a list field whose rows hold 0 or n_cols entries (checked)."""
    if not n_cols or not lists.flat.shape[0]:
        return np.zeros((n_rows, n_cols), dtype=dtype)
    if lists.flat.shape[0] == n_rows * n_cols:
        # Every row full: one cast (a copy, so the result is writable) and no scatter.
        return lists.flat.astype(dtype).reshape(n_rows, n_cols)
    out = np.zeros((n_rows, n_cols), dtype=dtype)
    out[lists.counts > 0] = lists.flat.reshape(-1, n_cols)
    return out


def _ids(lists: Ragged, n_rows: int, n_cols: int) -> Ids:
    """Group ids or terms, narrowed; one-byte varints (below 128) are uint8 already."""
    if lists.flat.dtype == np.uint8:
        return _cells(lists, n_rows, n_cols, np.uint8)
    return _narrow(_cells(lists, n_rows, n_cols, np.uint64))


def _meta(h: RowHeader) -> RowMeta:
    return RowMeta(
        bucket_id=h.bucket_id,
        start=h.start,
        end=h.end,
        label=h.label,
        aggregate=h.aggregate,
        route_ids=h.route_ids,
        route_ids_truncated=h.route_ids_truncated,
        route_count=h.route_count,
        lineage_id=h.lineage_id,
    )


def node_matrix_from_wire(
    node: str, wire: KeyVizMatrixWire, *, step_ms: int | None = None
) -> NodeMatrix:
    """node_matrix_from_response for a response decoded by proto.wire: same checks, reasons."""
    if step_ms is not None and step_ms <= 0:
        raise MalformedMatrixError(f"step {step_ms} ms is not positive")
    reason = _first_bad_row(wire)
    if reason is not None:
        raise MalformedMatrixError(reason)
    n_rows, n_cols = len(wire.rows), int(wire.column_unix_ms.shape[0])
    return NodeMatrix(
        node=node,
        column_unix_ms=wire.column_unix_ms,
        rows=tuple(_meta(h) for h in wire.rows),
        values=_cells(wire.values, n_rows, n_cols, np.uint64),
        soft=_cells(wire.soft_columns, n_rows, n_cols, np.bool_),
        raft_group_ids=_ids(wire.raft_group_ids, n_rows, n_cols),
        leader_terms=_ids(wire.leader_terms, n_rows, n_cols),
        step_ms=step_ms,
    )


def node_matrix_from_bytes(node: str, data: bytes, *, step_ms: int | None = None) -> NodeMatrix:
    """A node's serialized GetKeyVizMatrixResponse straight to a validated NodeMatrix.

    Raises proto.wire.WireDecodeError (a protobuf DecodeError) when protobuf
    would not parse the bytes, MalformedMatrixError as node_matrix_from_response.
    """
    if step_ms is not None and step_ms <= 0:
        raise MalformedMatrixError(f"step {step_ms} ms is not positive")
    return node_matrix_from_wire(node, decode_keyviz_matrix(data), step_ms=step_ms)


def node_matrices_from_responses(
    responses: Mapping[str, admin_pb2.GetKeyVizMatrixResponse],
    *,
    step_ms: int | None = None,
) -> tuple[list[NodeMatrix], dict[str, str]]:
    """Convert every node's response; return (valid matrices, {node: reason})."""
    valid: list[NodeMatrix] = []
    rejected: dict[str, str] = {}
    for node in sorted(responses):
        try:
            valid.append(node_matrix_from_response(node, responses[node], step_ms=step_ms))
        except MalformedMatrixError as exc:
            rejected[node] = f"malformed KeyViz matrix: {exc.reason}"
    return valid, rejected


@dataclass(frozen=True, eq=False)
class AlignedNode:
    """One node's cells placed on the merged (pre-budget) grid.

    `row_index[i]` is the merged base row of the node's row i and
    `column_index[j]` the merged base column of aligned column j (strictly
    increasing). `source_column_unix_ms[j]` is the node's own flush time that
    fed column j (the latest one when several were summed).
    """

    node: str
    step_ms: int
    row_index: Index
    column_index: Index
    values: U64
    soft: Bools
    raft_group_ids: Ids
    leader_terms: Ids
    source_column_unix_ms: I64
    group_max: int = 0
    term_max: int = 0
    # A bound on `values`: the write merge compares them in the narrowest type it allows.
    value_max: int = 2**64 - 1


@dataclass(frozen=True, eq=False)
class Provenance:
    """What the merged matrix was built from, for the cell detail.

    `row_edges` / `column_edges` map final rows / columns to half-open ranges
    of base rows / columns (the budgets only ever join adjacent ones).
    """

    base_rows: tuple[RowMeta, ...]
    base_column_unix_ms: I64
    nodes: tuple[AlignedNode, ...]
    row_edges: Index
    column_edges: Index


@dataclass(frozen=True, eq=False)
class MergedMatrix:
    """The cluster-wide matrix: R rows x M columns plus per-cell flags.

    `series` is an admin_pb2.KeyVizSeries value (UNSPECIFIED normalised to
    WRITES). `step_ms` is the width of one column.
    """

    series: int
    step_ms: int
    column_unix_ms: I64
    rows: tuple[RowMeta, ...]
    values: U64
    soft: Bools
    conflict: Bools
    degraded: Bools
    warnings: tuple[str, ...] = ()
    provenance: Provenance | None = field(default=None, repr=False)
    # Cells no contributing node could report (a node was down): not zero. None = none.
    unknown: Bools | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.column_unix_ms.shape[0]))

    def row_position(self, bucket_id: str) -> int:
        """Index of the row with this bucket id; KeyError when absent."""
        for i, row in enumerate(self.rows):
            if row.bucket_id == bucket_id:
                return i
        raise KeyError(bucket_id)
