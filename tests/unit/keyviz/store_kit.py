"""Builders for the KeyViz store tests: node and merged columns as the collector makes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keyviz.columns import MergedColumn, NodeColumn
from keyviz.matrix import RowMeta

STEP = 60_000
T0 = 1_800_000_000_000 - (1_800_000_000_000 % 3_600_000)  # on an hour boundary
WRITES = 2
READS = 1


def meta(bucket: str, *, start: bytes | None = None, end: bytes = b"", label: str = "") -> RowMeta:
    return RowMeta(
        bucket_id=bucket,
        start=bucket.encode() if start is None else start,
        end=end,
        label=label or bucket,
        route_ids=(1, 2),
        route_count=2,
    )


def merged(
    t: int,
    cells: Mapping[str, int],
    *,
    flags: Mapping[str, int] | None = None,
    series: int = WRITES,
    step: int = STEP,
    contributors: Mapping[str, int] | None = None,
    missing: Sequence[str] = (),
    unknown_all: bool = False,
    metas: Mapping[str, RowMeta] | None = None,
) -> MergedColumn:
    names = sorted(set(cells) | set(flags or {}))
    rows = tuple((metas or {}).get(b) or meta(b) for b in names)
    return MergedColumn(
        series=series,
        column_unix_ms=t,
        step_ms=step,
        rows=rows,
        values=np.array([cells.get(b, 0) for b in names], dtype=np.uint64),
        flags=np.array([(flags or {}).get(b, 0) for b in names], dtype=np.uint8),
        contributors=dict({"n1": t - 100} if contributors is None else contributors),
        missing=tuple(missing),
        unknown_all=unknown_all,
    )


def node_column(
    node: str,
    t: int,
    cells: Mapping[str, int],
    *,
    soft: Sequence[str] = (),
    groups: Mapping[str, int] | None = None,
    terms: Mapping[str, int] | None = None,
    metas: Mapping[str, RowMeta] | None = None,
) -> NodeColumn:
    names = sorted(cells)
    return NodeColumn(
        node=node,
        column_unix_ms=t,
        rows=tuple((metas or {}).get(b) or meta(b) for b in names),
        values=np.array([cells[b] for b in names], dtype=np.uint64),
        soft=np.array([b in soft for b in names], dtype=np.bool_),
        raft_group_ids=np.array([(groups or {}).get(b, 0) for b in names], dtype=np.uint64),
        leader_terms=np.array([(terms or {}).get(b, 0) for b in names], dtype=np.uint64),
    )
