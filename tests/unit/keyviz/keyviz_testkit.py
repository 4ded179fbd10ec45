"""Builders for KeyViz tests: protobuf responses as nodes send them, and a
per-cell reference of the write rule to check the vectorised merge against."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from keyviz.matrix import NodeMatrix, node_matrix_from_response
from proto import admin_pb2

STEP = 60_000
T0 = 1_700_000_040_000  # a multiple of STEP
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
READS = admin_pb2.KEYVIZ_SERIES_READS


def row(
    bucket: str,
    values: Sequence[int],
    *,
    groups: Sequence[int] = (),
    terms: Sequence[int] = (),
    soft: Sequence[bool] = (),
    start: bytes | None = None,
    end: bytes = b"",
    label: str = "",
    route_ids: Iterable[int] = (),
    route_count: int = 1,
    aggregate: bool = False,
) -> admin_pb2.KeyVizRow:
    return admin_pb2.KeyVizRow(
        bucket_id=bucket,
        start=bucket.encode() if start is None else start,
        end=end,
        label=label,
        aggregate=aggregate,
        route_ids=list(route_ids),
        route_count=route_count,
        values=list(values),
        soft_columns=list(soft),
        raft_group_ids=list(groups),
        leader_terms=list(terms),
    )


def response(
    columns: Sequence[int], *rows: admin_pb2.KeyVizRow
) -> admin_pb2.GetKeyVizMatrixResponse:
    return admin_pb2.GetKeyVizMatrixResponse(column_unix_ms=list(columns), rows=list(rows))


def node(
    name: str, columns: Sequence[int], *rows: admin_pb2.KeyVizRow, step_ms: int | None = None
) -> NodeMatrix:
    return node_matrix_from_response(name, response(columns, *rows), step_ms=step_ms)


def cols(n: int, *, offset: int = 0, step: int = STEP, first: int = T0) -> list[int]:
    """n column timestamps one step apart, shifted by `offset` ms."""
    return [first + offset + i * step for i in range(n)]


def reference_write_cell(reports: Iterable[tuple[int, int, int]]) -> tuple[int, bool]:
    """DESIGN step 4 for one cell, written as plainly as possible.

    reports: (value, raft_group_id, leader_term) per node.
    """
    live = [(v, g, t) for v, g, t in reports if v > 0]
    if not live:
        return 0, False
    if any(g == 0 or t == 0 for _, g, t in live):
        seen = {v for v, _, _ in live}
        return max(seen), len(seen) > 1
    by_key: dict[tuple[int, int], set[int]] = defaultdict(set)
    for v, g, t in live:
        by_key[(g, t)].add(v)
    return sum(max(s) for s in by_key.values()), any(len(s) > 1 for s in by_key.values())
