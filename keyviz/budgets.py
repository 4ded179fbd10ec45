"""Row and column budgets for a merged matrix (DESIGN "KeyViz merge" steps 7-8).

Both only ever join ADJACENT rows (key order) or columns (time order), sum
their values exactly in uint64 and OR their flags (soft, conflict, degraded and
unknown: a joined cell with any unknown part is unknown), so totals are preserved
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

Speed: numpy's reduceat runs its inner loop along the reduced axis, i.e.
once per (group, column) on axis 0 and once per (row, group) on axis 1, 5-10x
slower than the loops below. Rows are joined with one reduce per run of rows
(each run is a contiguous block, read once); columns with one strided slice
per position within a run of equal-width groups.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import replace
from operator import attrgetter
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from keyviz.matrix import Index, MergedMatrix, RowMeta

DEFAULT_ROWS = 256
MAX_ROWS = 1024
DEFAULT_COLS = 1000
MAX_COLS = 10_000

T = TypeVar("T", bound=np.generic)

_label = attrgetter("label")
_route_ids = attrgetter("route_ids")
_route_ids_truncated = attrgetter("route_ids_truncated")
_route_count = attrgetter("route_count")


def coarsen_rows(totals: Sequence[int], budget: int) -> list[int]:
    """Start indexes of the row groups left after joining down to `budget` rows.

    A heap over a linked list of groups: O(n log n). Each adjacent pair has
    one entry, keyed by (combined total, index of its RIGHT group) packed
    into one int (cheaper to compare than a tuple); among live pairs the
    right index orders like the left one, so ties still go leftmost. A join
    only ever grows the pairs on either side while keeping their right
    group, so their entries become lower bounds instead of dead: one that
    reaches the top with an outdated total is re-keyed in place
    (heapreplace), and the heap never holds entries of joined pairs.
    """
    n = len(totals)
    if n <= budget:
        return list(range(n))
    total = list(totals)
    after = list(range(1, n + 1))
    before = list(range(-1, n - 1))
    heap = [(a + b) * n + right for right, (a, b) in enumerate(itertools.pairwise(total), 1)]
    heapq.heapify(heap)
    heappop, heapreplace = heapq.heappop, heapq.heapreplace
    joins = n - budget
    while joins:
        combined, right = divmod(heap[0], n)
        left = before[right]
        current = total[left] + total[right]
        if current != combined:
            heapreplace(heap, current * n + right)
            continue
        heappop(heap)
        total[left] = combined
        following = after[right]
        after[left] = following
        if following < n:
            before[following] = left
        joins -= 1
    starts = []
    i = 0
    while i < n:
        starts.append(i)
        i = after[i]
    return starts


def _members(row: RowMeta) -> tuple[str, ...]:
    return row.member_bucket_ids or (row.bucket_id,)


def aggregate_row(rows: Sequence[RowMeta]) -> RowMeta:
    """The row that stands for adjacent `rows` (key order) after joining them."""
    if len(rows) == 1:
        return rows[0]
    members = tuple(itertools.chain.from_iterable(map(_members, rows)))
    labels = set(map(_label, rows))
    return RowMeta(
        bucket_id=f"virtual:{members[0]}..{members[-1]}",
        start=rows[0].start,
        end=rows[-1].end,
        label=labels.pop() if len(labels) == 1 else "",
        aggregate=True,
        route_ids=tuple(sorted(set(itertools.chain.from_iterable(map(_route_ids, rows))))),
        route_ids_truncated=any(map(_route_ids_truncated, rows)),
        route_count=sum(map(_route_count, rows)),
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
    totals: list[int] = m.values.sum(axis=1, dtype=np.uint64).tolist()
    starts = coarsen_rows(totals, max_rows)
    bounds = [*starts, n]
    rows = tuple(aggregate_row(m.rows[a:b]) for a, b in itertools.pairwise(bounds))
    edges = np.array(bounds, dtype=np.intp)
    prov = m.provenance
    return replace(
        m,
        rows=rows,
        values=_join_rows(np.add, m.values, bounds),
        soft=_join_rows(np.logical_or, m.soft, bounds),
        conflict=_join_rows(np.logical_or, m.conflict, bounds),
        degraded=_join_rows(np.logical_or, m.degraded, bounds),
        unknown=None if m.unknown is None else _join_rows(np.logical_or, m.unknown, bounds),
        provenance=None if prov is None else replace(prov, row_edges=prov.row_edges[edges]),
    )


def _join_rows(op: np.ufunc, a: NDArray[T], bounds: Sequence[int]) -> NDArray[T]:
    """op.reduce over each run of rows `bounds[g]:bounds[g + 1]`.

    One reduce per run reads `a` once. (Gathering the k-th row of every run
    takes fewer calls but another pass, which costs more once the matrix
    outgrows the cache.) Runs of one or two rows, the hot rows, skip reduce's
    setup.
    """
    groups = len(bounds) - 1
    if a.dtype == np.bool_ and not a.any():
        return np.zeros((groups, a.shape[1]), dtype=a.dtype)
    out = np.empty((groups, a.shape[1]), dtype=a.dtype)
    reduce = op.reduce
    for row, (lo, hi) in zip(out, itertools.pairwise(bounds), strict=True):
        if hi - lo == 1:
            row[...] = a[lo]
        elif hi - lo == 2:
            op(a[lo], a[lo + 1], out=row)
        else:
            reduce(a[lo:hi], axis=0, out=row)
    return out


# (first group, end group, first column, end column, width): consecutive groups of one width.
ColumnRun = tuple[int, int, int, int, int]


def _column_runs(edges: Index, max_ops: int) -> list[ColumnRun] | None:
    """Column groups `edges[g]:edges[g + 1]` as runs of consecutive groups of equal width.

    Within a run, the k-th columns of all its groups are one strided slice.
    None when that takes more than `max_ops` slice ops (many short runs: gaps).
    """
    sizes = np.diff(edges)
    first = np.flatnonzero(np.concatenate(([True], sizes[1:] != sizes[:-1])))
    width = sizes[first]
    if int(width.sum()) > max_ops:
        return None
    starts = first.tolist()
    ends = [*starts[1:], int(sizes.shape[0])]
    col = edges.tolist()
    return [
        (g0, g1, col[g0], col[g1], w)
        for g0, g1, w in zip(starts, ends, width.tolist(), strict=True)
    ]


def _join_columns(
    op: np.ufunc, a: NDArray[T], starts: Index, runs: list[ColumnRun] | None
) -> NDArray[T]:
    """op.reduce over each run of columns from `starts[g]` to the next start.

    `runs` from _column_runs; None uses reduceat (many short runs: gaps).
    """
    groups = starts.shape[0]
    if a.dtype == np.bool_ and not a.any():
        return np.zeros((a.shape[0], groups), dtype=a.dtype)
    if runs is None:
        result: NDArray[T] = op.reduceat(a, starts, axis=1)
        return result
    out = np.empty((a.shape[0], groups), dtype=a.dtype)
    for g0, g1, c0, c1, w in runs:
        dst = out[:, g0:g1]
        if w == 1:
            dst[...] = a[:, c0:c1]
            continue
        op(a[:, c0:c1:w], a[:, c0 + 1 : c1 : w], out=dst)
        for k in range(2, w):
            op(dst, a[:, c0 + k : c1 : w], out=dst)
    return out


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
    # A slice op costs ~1 us, reduceat ~5 ns a (row, group) cell.
    runs = _column_runs(edges, max_ops=m.shape[0] * starts.shape[0] // 200)
    prov = m.provenance
    return replace(
        m,
        step_ms=m.step_ms * width,
        column_unix_ms=m.column_unix_ms[edges[1:] - 1],
        values=_join_columns(np.add, m.values, starts, runs),
        soft=_join_columns(np.logical_or, m.soft, starts, runs),
        conflict=_join_columns(np.logical_or, m.conflict, starts, runs),
        degraded=_join_columns(np.logical_or, m.degraded, starts, runs),
        unknown=None
        if m.unknown is None
        else _join_columns(np.logical_or, m.unknown, starts, runs),
        provenance=None if prov is None else replace(prov, column_edges=prov.column_edges[edges]),
    )


def fit_to_display(
    m: MergedMatrix, *, max_rows: int = DEFAULT_ROWS, max_cols: int = DEFAULT_COLS
) -> MergedMatrix:
    """Row budget, then column budget (DESIGN steps 7 and 8)."""
    return apply_column_budget(apply_row_budget(m, max_rows), max_cols)
