"""DESIGN "KeyViz merge" steps 7-8: row budget and column budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyviz.budgets import (
    _column_runs,
    _edges,
    _join_columns,
    _join_rows,
    apply_column_budget,
    apply_row_budget,
    coarsen_rows,
    fit_to_display,
)
from keyviz.matrix import MergedMatrix, RowMeta
from tests.unit.keyviz.keyviz_testkit import STEP, T0, WRITES, cols


def matrix(
    values: list[list[int]],
    *,
    columns: list[int] | None = None,
    rows: list[RowMeta] | None = None,
    soft: list[list[bool]] | None = None,
) -> MergedMatrix:
    v = np.array(values, dtype=np.uint64).reshape(len(values), -1)
    shape = v.shape
    return MergedMatrix(
        series=WRITES,
        step_ms=STEP,
        column_unix_ms=np.array(columns or cols(shape[1]), dtype=np.int64),
        rows=tuple(rows or [RowMeta(f"route:{i}", start=bytes([i])) for i in range(shape[0])]),
        values=v,
        soft=np.array(soft, dtype=np.bool_) if soft else np.zeros(shape, dtype=np.bool_),
        conflict=np.zeros(shape, dtype=np.bool_),
        degraded=np.zeros(shape, dtype=np.bool_),
    )


def test_row_budget_joins_the_coldest_adjacent_rows_first() -> None:
    m = apply_row_budget(matrix([[5], [1], [1], [5]]), 3)
    assert [r.bucket_id for r in m.rows] == ["route:0", "virtual:route:1..route:2", "route:3"]
    assert m.values.tolist() == [[5], [2], [5]]


def test_row_budget_keeps_hot_rows_single() -> None:
    m = apply_row_budget(matrix([[1], [100], [1], [1], [1], [100], [1], [1]]), 5)
    assert m.values.tolist() == [[1], [100], [3], [100], [2]]
    assert [r.aggregate for r in m.rows] == [False, False, True, False, True]


def test_row_budget_breaks_ties_leftmost_first() -> None:
    assert coarsen_rows([1, 1, 1, 1], 3) == [0, 2, 3]


def test_row_budget_preserves_totals_exactly() -> None:
    big = 2**62
    m = apply_row_budget(matrix([[big, 1], [big, 2], [3, 4]]), 1)
    assert m.values.tolist() == [[2 * big + 3, 7]]


def test_aggregate_row_lists_member_bucket_ids_and_routes() -> None:
    rows = [
        RowMeta("route:1", start=b"a", end=b"b", label="redis", route_ids=(1,), route_count=1),
        RowMeta("route:2", start=b"b", end=b"c", label="redis", route_ids=(2,), route_count=1),
        RowMeta(
            "virtual:7",
            start=b"c",
            end=b"",
            label="redis",
            aggregate=True,
            route_ids=(3, 1),
            route_ids_truncated=True,
            route_count=9,
        ),
    ]
    (agg,) = apply_row_budget(matrix([[1], [1], [1]], rows=rows), 1).rows
    assert agg == RowMeta(
        bucket_id="virtual:route:1..virtual:7",
        start=b"a",
        end=b"",
        label="redis",
        aggregate=True,
        route_ids=(1, 2, 3),
        route_ids_truncated=True,
        route_count=11,
        member_bucket_ids=("route:1", "route:2", "virtual:7"),
    )


def test_aggregate_of_mixed_labels_has_no_label() -> None:
    rows = [RowMeta("route:1:redis", label="redis"), RowMeta("route:1:s3", label="s3")]
    (agg,) = apply_row_budget(matrix([[1], [1]], rows=rows), 1).rows
    assert agg.label == ""


def test_joining_aggregates_again_keeps_the_original_members() -> None:
    once = apply_row_budget(matrix([[1], [1], [1], [1]]), 2)
    twice = apply_row_budget(once, 1)
    assert twice.rows[0].member_bucket_ids == ("route:0", "route:1", "route:2", "route:3")
    assert twice.rows[0].bucket_id == "virtual:route:0..route:3"


def test_row_budget_ors_flags() -> None:
    m = matrix([[1, 1], [1, 1], [9, 9]], soft=[[True, False], [False, False], [False, False]])
    m.conflict[1, 1] = True
    m.degraded[0, :] = True
    out = apply_row_budget(m, 2)
    assert out.soft.tolist() == [[True, False], [False, False]]
    assert out.conflict.tolist() == [[False, True], [False, False]]
    assert out.degraded.tolist() == [[True, True], [False, False]]


def test_row_budget_ors_unknown_a_joined_row_with_an_unknown_part_is_unknown() -> None:
    m = matrix([[1, 1], [1, 1], [9, 9]])
    unknown = np.zeros(m.shape, dtype=np.bool_)
    unknown[1, 0] = True
    out = apply_row_budget(replace(m, unknown=unknown), 2)
    assert out.values.tolist() == [[2, 2], [9, 9]]
    assert out.unknown is not None
    assert out.unknown.tolist() == [[True, False], [False, False]]


def test_budgets_keep_no_unknown_array_when_no_cell_is_unknown() -> None:
    out = fit_to_display(
        matrix([[1, 1, 1, 1]] * 3, columns=cols(4, first=T0 + STEP)), max_rows=1, max_cols=2
    )
    assert out.unknown is None


@pytest.mark.parametrize("budget", [0, 1025])
def test_row_budget_outside_1_to_1024_is_refused(budget: int) -> None:
    with pytest.raises(ValueError, match=r"max_rows must be within 1\.\.1024"):
        apply_row_budget(matrix([[1]]), budget)


def test_matrix_within_budgets_is_returned_unchanged() -> None:
    m = matrix([[1, 2], [3, 4]])
    assert fit_to_display(m, max_rows=2, max_cols=2) is m


def test_row_budget_handles_thousands_of_rows() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 1000, size=(5000, 4)).tolist()
    m = matrix(
        values, rows=[RowMeta(f"route:{i}", start=i.to_bytes(2, "big")) for i in range(5000)]
    )
    out = apply_row_budget(m, 256)
    assert out.shape == (256, 4)
    assert out.values.sum(axis=0).tolist() == m.values.sum(axis=0).tolist()
    members = [b for r in out.rows for b in (r.member_bucket_ids or (r.bucket_id,))]
    assert members == [r.bucket_id for r in m.rows]


def _naive_coarsen(totals: list[int], budget: int) -> list[int]:
    """The rule written as repeated scans: join the least-total adjacent pair, leftmost."""
    groups = [[i, t] for i, t in enumerate(totals)]
    while len(groups) > budget:
        sums = [groups[i][1] + groups[i + 1][1] for i in range(len(groups) - 1)]
        i = sums.index(min(sums))
        groups[i][1] += groups.pop(i + 1)[1]
    return [g[0] for g in groups]


@given(st.lists(st.integers(0, 20), min_size=1, max_size=40), st.integers(1, 40))
def test_row_budget_heap_matches_the_plain_rule(totals: list[int], budget: int) -> None:
    assert coarsen_rows(totals, budget) == _naive_coarsen(totals, budget)


@given(
    st.lists(st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)), min_size=1, max_size=300),
    st.integers(1, 300),
)
def test_row_budget_heap_matches_the_plain_rule_on_long_rows_and_huge_totals(
    totals: list[int], budget: int
) -> None:
    # Zeros make ties and re-keyed heap entries; sums past 2**64 must stay exact.
    assert coarsen_rows(totals, budget) == _naive_coarsen(totals, budget)


def _random_groups(rng: np.random.Generator, n: int) -> list[int]:
    """Bounds of runs covering 0..n, mostly short ones, as the row budget makes them."""
    sizes = rng.choice([1, 1, 2, 3, 5, 17], size=n)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    return [*bounds[bounds < n].tolist(), n]


@pytest.mark.parametrize("seed", range(20))
def test_row_join_matches_reduceat(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 60)), int(rng.integers(0, 50))
    values = rng.integers(0, 2**64, size=(n, c), dtype=np.uint64)  # sums wrap like reduceat's
    flags = rng.random((n, c)) < rng.choice([0.0, 0.05, 0.5])
    bounds = _random_groups(rng, n)
    for op, a in ((np.add, values), (np.logical_or, flags)):
        got = _join_rows(op, a, bounds)
        want = op.reduceat(a, bounds[:-1], axis=0)
        assert got.dtype == a.dtype
        assert got.flags.c_contiguous
        assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(20))
def test_column_join_by_strided_runs_matches_reduceat(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, groups = int(rng.integers(1, 20)), int(rng.integers(1, 40))
    width = int(rng.integers(1, 7))
    # Mostly full-width groups, some partial ones (first, last, around gaps).
    sizes = np.where(rng.random(groups) < 0.8, width, rng.integers(1, width + 1, size=groups))
    edges = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
    cols = int(edges[-1])
    values = rng.integers(0, 2**64, size=(rows, cols), dtype=np.uint64)
    flags = rng.random((rows, cols)) < rng.choice([0.0, 0.05, 0.5])
    runs = _column_runs(edges, max_ops=10**9)
    assert runs is not None
    for op, a in ((np.add, values), (np.logical_or, flags)):
        want = op.reduceat(a, edges[:-1], axis=1)
        for plan in (runs, None):
            got = _join_columns(op, a, edges[:-1], plan)
            assert got.dtype == a.dtype
            assert np.array_equal(got, want)


def test_column_runs_give_way_to_reduceat_when_there_are_too_many() -> None:
    edges = _edges(np.array([0, 1, 3, 4, 6]), 7)  # widths 1 2 1 2 1: five runs
    assert _column_runs(edges, max_ops=7) is not None
    assert _column_runs(edges, max_ops=6) is None


def test_budgets_of_a_large_matrix_match_reduceat() -> None:
    # Large enough for the strided column path; a gap makes runs of several widths.
    rng = np.random.default_rng(11)
    rows, n = 600, 3000
    columns = cols(n, first=T0 + STEP)
    columns[1700:] = [t + 37 * STEP for t in columns[1700:]]
    values = (rng.poisson(rng.lognormal(1.0, 1.5, size=(rows, 1)), size=(rows, n))).tolist()
    m = matrix(
        values,
        columns=columns,
        rows=[RowMeta(f"route:{i}", start=i.to_bytes(2, "big")) for i in range(rows)],
    )
    m.conflict[rng.random((rows, n)) < 0.1] = True
    out = fit_to_display(m, max_rows=256, max_cols=1000)
    starts = coarsen_rows(m.values.sum(axis=1).tolist(), 256)
    slots = np.asarray(columns) // STEP
    group = -(-slots // (out.step_ms // STEP))
    col_starts = np.flatnonzero(np.concatenate(([True], np.diff(group) != 0)))
    assert out.shape == (256, col_starts.shape[0])
    # The budget took the strided path (same cost rule as apply_column_budget).
    edges = _edges(col_starts, n)
    assert _column_runs(edges, max_ops=256 * col_starts.shape[0] // 200) is not None
    for name, op in (("values", np.add), ("conflict", np.logical_or)):
        a = getattr(m, name)
        want = op.reduceat(op.reduceat(a, starts, axis=0), col_starts, axis=1)
        assert np.array_equal(getattr(out, name), want)


def test_column_budget_sums_adjacent_columns() -> None:
    m = apply_column_budget(matrix([list(range(1, 11))], columns=cols(10, first=T0 + STEP)), 5)
    assert m.values.tolist() == [[3, 7, 11, 15, 19]]
    assert m.step_ms == 2 * STEP
    # Each wide column ends where its last column ends.
    assert m.column_unix_ms.tolist() == [T0 + 2 * STEP * k for k in range(1, 6)]


def test_column_groups_follow_time_not_the_first_column() -> None:
    # Starting one step earlier shifts nothing: wide columns still end on 2-step boundaries,
    # so the first and the (still filling) last ones hold a single column.
    m = apply_column_budget(matrix([list(range(1, 11))], columns=cols(10, first=T0)), 6)
    assert m.column_unix_ms.tolist() == [T0 + 2 * STEP * k for k in range(5)] + [T0 + 9 * STEP]
    assert m.values.tolist() == [[1, 5, 9, 13, 17, 10]]
    assert m.step_ms == 2 * STEP


def test_column_budget_timestamp_of_a_partial_group_is_its_last_column() -> None:
    m = apply_column_budget(matrix([[1, 2, 3]], columns=cols(3, first=T0 + STEP)), 1)
    assert m.values.tolist() == [[6]]
    assert m.column_unix_ms.tolist() == [T0 + 3 * STEP]


def test_column_budget_ors_flags() -> None:
    m = matrix([[1, 1, 1, 1]], columns=cols(4, first=T0 + STEP), soft=[[False, True, False, False]])
    m.degraded[0, 3] = True
    out = apply_column_budget(m, 2)
    assert out.soft.tolist() == [[True, False]]
    assert out.degraded.tolist() == [[False, True]]
    assert out.conflict.tolist() == [[False, False]]


def test_column_budget_ors_unknown() -> None:
    m = matrix([[1, 1, 1, 1]], columns=cols(4, first=T0 + STEP))
    unknown = np.array([[False, False, True, False]])
    out = apply_column_budget(replace(m, unknown=unknown), 2)
    assert out.values.tolist() == [[2, 2]]
    assert out.unknown is not None
    assert out.unknown.tolist() == [[False, True]]


@pytest.mark.parametrize("budget", [0, 10_001])
def test_column_budget_outside_1_to_10000_is_refused(budget: int) -> None:
    with pytest.raises(ValueError, match=r"max_cols must be within 1\.\.10000"):
        apply_column_budget(matrix([[1]]), budget)


def test_fit_to_display_applies_rows_then_columns() -> None:
    m = fit_to_display(
        matrix([[1, 1, 1, 1], [1, 1, 1, 1], [50, 0, 0, 0]], columns=cols(4, first=T0 + STEP)),
        max_rows=2,
        max_cols=2,
    )
    assert m.values.tolist() == [[4, 4], [50, 0]]
    assert m.rows[0].member_bucket_ids == ("route:0", "route:1")


def test_column_budget_over_a_long_gap_finds_a_width_quickly() -> None:
    far = T0 + 1_000_000 * STEP
    m = apply_column_budget(matrix([[1, 2, 3]], columns=[T0 + STEP, T0 + 2 * STEP, far]), 2)
    assert m.values.tolist() == [[3, 3]]
    assert m.column_unix_ms.tolist() == [T0 + 2 * STEP, far]
    assert m.step_ms == 2 * STEP
    one = apply_column_budget(matrix([[1, 2, 3]], columns=[T0 + STEP, T0 + 2 * STEP, far]), 1)
    assert one.values.tolist() == [[6]]
    assert one.column_unix_ms.tolist() == [far]
