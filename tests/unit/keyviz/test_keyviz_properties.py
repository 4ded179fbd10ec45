"""Properties of the merge and the budgets, checked over generated clusters (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from keyviz.budgets import apply_row_budget, fit_to_display
from keyviz.matrix import MergedMatrix, NodeMatrix
from keyviz.merge import cell_contributions, merge_nodes
from tests.unit.keyviz.keyviz_testkit import STEP, T0, WRITES, node, reference_write_cell, row

BUCKETS = [f"route:{i}" for i in range(6)]
small = st.integers(0, 5)
ids = st.integers(0, 2)


@st.composite
def node_matrix(
    draw: st.DrawFn, name: str, *, jitter: bool = True, min_cols: int = 1
) -> NodeMatrix:
    n_cols = draw(st.integers(min_cols, 6))
    first = T0 + draw(st.integers(0, 4)) * STEP + draw(st.integers(0, STEP - 1))
    columns = [
        first + i * STEP + (draw(st.integers(-3, 3)) if jitter else 0) for i in range(n_cols)
    ]
    buckets = sorted(draw(st.sets(st.sampled_from(BUCKETS), min_size=1)))
    rows = [
        row(
            b,
            draw(st.lists(small, min_size=n_cols, max_size=n_cols)),
            groups=draw(st.lists(ids, min_size=n_cols, max_size=n_cols)),
            terms=draw(st.lists(ids, min_size=n_cols, max_size=n_cols)),
            soft=draw(st.lists(st.booleans(), min_size=n_cols, max_size=n_cols)),
        )
        for b in buckets
    ]
    return node(name, columns, *rows, step_ms=STEP if n_cols == 1 else None)


@st.composite
def cluster(draw: st.DrawFn) -> list[NodeMatrix]:
    n = draw(st.integers(1, 4))
    return [draw(node_matrix(f"n{i}")) for i in range(n)]


policies = st.sampled_from(["dedupe", "sum"])


def _same(a: MergedMatrix, b: MergedMatrix) -> None:
    assert a.rows == b.rows
    assert a.column_unix_ms.tolist() == b.column_unix_ms.tolist()
    assert a.values.tolist() == b.values.tolist()
    assert a.conflict.tolist() == b.conflict.tolist()
    assert a.soft.tolist() == b.soft.tolist()
    assert a.degraded.tolist() == b.degraded.tolist()


@given(cluster(), st.integers(1, 8), st.integers(1, 8), policies)
def test_budgets_preserve_totals(
    nodes: list[NodeMatrix], max_rows: int, max_cols: int, policy: str
) -> None:
    merged = merge_nodes(nodes, series=WRITES, writes_merge=policy)  # type: ignore[arg-type]
    by_rows = apply_row_budget(merged, max_rows)
    shown = fit_to_display(merged, max_rows=max_rows, max_cols=max_cols)
    assert by_rows.values.sum(axis=0).tolist() == merged.values.sum(axis=0).tolist()
    assert int(shown.values.sum()) == int(merged.values.sum())
    assert shown.shape[0] <= max_rows
    assert shown.shape[1] <= max_cols
    # Every base row is in exactly one shown row, in key order.
    members = [b for r in shown.rows for b in (r.member_bucket_ids or (r.bucket_id,))]
    assert members == [r.bucket_id for r in merged.rows]


@given(node_matrix("n1", jitter=False, min_cols=2), policies)
def test_merge_of_a_single_node_equals_its_input(single: NodeMatrix, policy: str) -> None:
    m = merge_nodes([single], series=WRITES, writes_merge=policy)  # type: ignore[arg-type]
    assert m.rows == single.rows
    assert m.values.tolist() == single.values.tolist()
    assert m.soft.tolist() == single.soft.tolist()
    assert not m.conflict.any()
    assert m.step_ms == STEP
    # Timestamps move to the nearest step boundary (half a step or less).
    moved = m.column_unix_ms - single.column_unix_ms
    assert bool(np.all((moved > -STEP // 2) & (moved <= STEP // 2)))
    assert bool(np.all(m.column_unix_ms % STEP == 0))
    assert m.warnings == ()


@given(cluster(), policies)
def test_order_of_nodes_does_not_change_the_result(nodes: list[NodeMatrix], policy: str) -> None:
    results = [
        merge_nodes(list(p), series=WRITES, writes_merge=policy)  # type: ignore[arg-type]
        for p in itertools.islice(itertools.permutations(nodes), 6)
    ]
    for other in results[1:]:
        _same(results[0], other)
        assert results[0].warnings == other.warnings


@st.composite
def cluster_and_zero_node(draw: st.DrawFn) -> tuple[list[NodeMatrix], NodeMatrix]:
    nodes = draw(cluster())
    like = draw(st.sampled_from(nodes))
    keep = draw(st.lists(st.booleans(), min_size=len(like.rows), max_size=len(like.rows)))
    n_cols = like.shape[1]
    rows = [
        row(
            r.bucket_id,
            [0] * n_cols,
            # Ids on empty cells break the contract, but must not change anything either.
            groups=draw(st.lists(ids, min_size=n_cols, max_size=n_cols)),
            terms=draw(st.lists(ids, min_size=n_cols, max_size=n_cols)),
        )
        for r, k in zip(like.rows, keep, strict=True)
        if k
    ]
    name = draw(st.sampled_from(["a-first", "zz-last"]))
    zero = node(name, like.column_unix_ms.tolist(), *rows, step_ms=like.step_ms)
    return nodes, zero


@given(cluster_and_zero_node(), policies)
def test_merging_with_an_all_zero_node_changes_nothing(
    case: tuple[list[NodeMatrix], NodeMatrix], policy: str
) -> None:
    nodes, zero = case
    before = merge_nodes(nodes, series=WRITES, writes_merge=policy)  # type: ignore[arg-type]
    after = merge_nodes([*nodes, zero], series=WRITES, writes_merge=policy)  # type: ignore[arg-type]
    _same(before, after)


@given(cluster())
def test_merged_writes_follow_the_rule_over_each_cells_contributions(
    nodes: list[NodeMatrix],
) -> None:
    m = merge_nodes(nodes, series=WRITES)
    for r, meta in enumerate(m.rows):
        for c, column in enumerate(m.column_unix_ms.tolist()):
            reports = [
                (x.value, x.raft_group_id, x.leader_term)
                for x in cell_contributions(m, meta.bucket_id, column)
            ]
            assert (int(m.values[r, c]), bool(m.conflict[r, c])) == reference_write_cell(reports)
