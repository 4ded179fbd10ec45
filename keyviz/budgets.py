"""Row and column budgets for a merged matrix (DESIGN "KeyViz merge" steps 7-8).

Both only ever join ADJACENT rows (key order) or columns (time order), sum
their values exactly in uint64 and OR their flags, so totals are preserved
and every displayed cell still maps to a range of base cells (Provenance).

Row budget: while there are too many rows, join the adjacent pair whose
combined total is smallest (leftmost on ties). Cold neighbours therefore melt
together first and a hot row is only joined once every remaining pair holds
a hotter total. A joined row is an aggregate: bucket id
`virtual:<first>..<last>`, `aggregate=True`, member bucket ids listed.

Column budget: columns are grouped by time so groups do not shift as new
columns arrive: with width w, the column at `slot * step` belongs to group
ceil(slot / w), i.e. wide columns end on multiples of w steps. The smallest w
that fits is used. A wide column's timestamp is the end of the last column in
it (so the newest, still filling one ends at the newest data), and its step
is `step * w`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import replace
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from keyviz.matrix import Index, MergedMatrix, RowMeta

DEFAULT_ROWS = 256
MAX_ROWS = 1024
DEFAULT_COLS = 1000
MAX_COLS = 10_000

T = TypeVar("T", bound=np.generic)


def coarsen_rows(totals: list[int], budget: int) -> list[int]:
    """Start indexes of the row groups left after joining down to `budget` rows.

    A heap of adjacent pairs keyed by (combined total, left index) over a
    linked list of groups: O(n log n). Entries that no longer describe two
    neighbouring groups with that total are skipped when popped.
    """
    n = len(totals)
    if n <= budget:
        return list(range(n))
    total = list(totals)
    after = list(range(1, n + 1))
    before = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(total[i] + total[i + 1], i, i + 1) for i in range(n - 1)]
    heapq.heapify(heap)
    count = n
    while count > budget:
        combined, left, right = heapq.heappop(heap)
        if not alive[left] or after[left] != right or total[left] + total[right] != combined:
            continue
        total[left] = combined
        alive[right] = False
        after[left] = after[right]
        if after[right] < n:
            before[after[right]] = left
        count -= 1
        if before[left] >= 0:
            heapq.heappush(heap, (total[before[left]] + combined, before[left], left))
        if after[left] < n:
            heapq.heappush(heap, (combined + total[after[left]], left, after[left]))
    return [i for i in range(n) if alive[i]]


def _members(row: RowMeta) -> tuple[str, ...]:
    return row.member_bucket_ids or (row.bucket_id,)


def aggregate_row(rows: list[RowMeta]) -> RowMeta:
    """The row that stands for adjacent `rows` (key order) after joining them."""
    if len(rows) == 1:
        return rows[0]
    members = tuple(b for row in rows for b in _members(row))
    labels = {row.label for row in rows}
    return RowMeta(
        bucket_id=f"virtual:{members[0]}..{members[-1]}",
        start=rows[0].start,
        end=rows[-1].end,
        label=labels.pop() if len(labels) == 1 else "",
        aggregate=True,
        route_ids=tuple(sorted({r for row in rows for r in row.route_ids})),
        route_ids_truncated=any(row.route_ids_truncated for row in rows),
        route_count=sum(row.route_count for row in rows),
        lineage_id="",
        member_bucket_ids=members,
    )


def _edges(starts: list[int] | Index, length: int) -> Index:
    return np.append(np.asarray(starts, dtype=np.intp), np.intp(length))


def apply_row_budget(m: MergedMatrix, max_rows: int = DEFAULT_ROWS) -> MergedMatrix:
    """Join adjacent rows, least total activity first, until at most max_rows remain."""
    if not 1 <= max_rows <= MAX_ROWS:
        raise ValueError(f"max_rows must be within 1..{MAX_ROWS}, got {max_rows}")
    n = len(m.rows)
    if n <= max_rows:
        return m
    totals = [int(t) for t in m.values.sum(axis=1, dtype=np.uint64).tolist()]
    starts = coarsen_rows(totals, max_rows)
    edges = _edges(starts, n)
    rows = tuple(aggregate_row(list(m.rows[int(a) : int(b)])) for a, b in itertools.pairwise(edges))
    prov = m.provenance
    return replace(
        m,
        rows=rows,
        values=_join_rows(np.add, m.values, edges),
        soft=_join_rows(np.logical_or, m.soft, edges),
        conflict=_join_rows(np.logical_or, m.conflict, edges),
        degraded=_join_rows(np.logical_or, m.degraded, edges),
        provenance=None if prov is None else replace(prov, row_edges=prov.row_edges[edges]),
    )


def _join_rows(op: np.ufunc, a: NDArray[T], edges: Index) -> NDArray[T]:
    """op.reduce over each run of rows; a loop of reduces is ~10x faster than reduceat on axis 0."""
    out = np.zeros((edges.shape[0] - 1, a.shape[1]), dtype=a.dtype)
    if a.dtype == np.bool_ and not a.any():
        return out
    for i, (lo, hi) in enumerate(itertools.pairwise(edges.tolist())):
        op.reduce(a[lo:hi], axis=0, out=out[i])
    return out


def _join_columns(op: np.ufunc, a: NDArray[T], starts: Index) -> NDArray[T]:
    if a.dtype == np.bool_ and not a.any():
        return np.zeros((a.shape[0], starts.shape[0]), dtype=a.dtype)
    result: NDArray[T] = op.reduceat(a, starts, axis=1)
    return result


def _group_starts(slots: Index, width: int) -> Index:
    group = -(-slots // width)  # ceil, also for negative slots
    return np.flatnonzero(np.concatenate(([True], np.diff(group) != 0))).astype(np.intp)


def column_groups(slots: Index, max_cols: int) -> tuple[int, Index]:
    """(width, start index of each group) for columns at these step slots.

    The width is the smallest that fits, found by doubling and then bisecting,
    so a window with a long gap between columns costs a few dozen tries.
    """
    n = int(slots.shape[0])
    low = max(1, -(-n // max_cols))
    starts = _group_starts(slots, low)
    if starts.shape[0] <= max_cols:
        return low, starts
    high = 2 * low
    while (starts := _group_starts(slots, high)).shape[0] > max_cols:
        low, high = high, 2 * high
    best = starts
    while high - low > 1:
        mid = (low + high) // 2
        starts = _group_starts(slots, mid)
        if starts.shape[0] <= max_cols:
            high, best = mid, starts
        else:
            low = mid
    return high, best


def apply_column_budget(m: MergedMatrix, max_cols: int = DEFAULT_COLS) -> MergedMatrix:
    """Sum adjacent columns into wider ones until at most max_cols remain."""
    if not 1 <= max_cols <= MAX_COLS:
        raise ValueError(f"max_cols must be within 1..{MAX_COLS}, got {max_cols}")
    n = m.shape[1]
    if n <= max_cols:
        return m
    width, starts = column_groups((m.column_unix_ms // m.step_ms).astype(np.intp), max_cols)
    edges = _edges(starts, n)
    prov = m.provenance
    return replace(
        m,
        step_ms=m.step_ms * width,
        column_unix_ms=m.column_unix_ms[edges[1:] - 1],
        values=_join_columns(np.add, m.values, starts),
        soft=_join_columns(np.logical_or, m.soft, starts),
        conflict=_join_columns(np.logical_or, m.conflict, starts),
        degraded=_join_columns(np.logical_or, m.degraded, starts),
        provenance=None if prov is None else replace(prov, column_edges=prov.column_edges[edges]),
    )


def fit_to_display(
    m: MergedMatrix, *, max_rows: int = DEFAULT_ROWS, max_cols: int = DEFAULT_COLS
) -> MergedMatrix:
    """Row budget, then column budget (DESIGN steps 7 and 8)."""
    return apply_column_budget(apply_row_budget(m, max_rows), max_cols)
