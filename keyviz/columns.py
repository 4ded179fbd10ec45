"""Columns as the collector and the store see them: one node's column, one merged column.

A node column is one GetKeyVizMatrix column of one node at the node's own flush
time, with only the rows that have a value or a soft mark in it. A merged column
is one column of the cluster-wide matrix on the portal's step grid (its time is
the END of its window, `slot * step_ms`), with the nodes that fed it and the
nodes that were expected but did not (their cells are unknown, DESIGN.md rule 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from keyviz.matrix import U64, Bools, Ids, RowMeta

U8 = NDArray[np.uint8]

# Per-cell flag bits, as in the binary matrix and the live stream.
FLAG_SOFT = 1
FLAG_CONFLICT = 2
FLAG_DEGRADED = 4  # kept for the wire format; the store marks missing data UNKNOWN instead
FLAG_UNKNOWN = 8  # a node that would have counted this cell did not report it


@dataclass(frozen=True, eq=False)
class NodeColumn:
    """One column of one node, at its own flush time: only the rows with something in it."""

    node: str
    column_unix_ms: int
    rows: tuple[RowMeta, ...]
    values: U64
    soft: Bools
    raft_group_ids: Ids
    leader_terms: Ids


@dataclass(frozen=True, eq=False)
class MergedColumn:
    """One column of the cluster-wide matrix on the step grid.

    `rows` are the rows with a value or a flag, in key order (start, bucket_id);
    `flags` holds FLAG_* bits per row. `contributors` maps each node that fed the
    column to its own flush time; `missing` are the nodes expected but absent.
    `unknown_all`: a missing node's groups were not known, so every row of the
    column is unknown (drawn and exported as such, not as 0).
    """

    series: int
    column_unix_ms: int
    step_ms: int
    rows: tuple[RowMeta, ...]
    values: U64
    flags: U8
    contributors: Mapping[str, int] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    unknown_all: bool = False
