"""DESIGN "KeyViz merge" steps 3-4: reads summed, writes by (raft_group_id, leader_term)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyviz.merge import merge_nodes, merge_writes
from proto import admin_pb2
from tests.unit.keyviz.keyviz_testkit import (
    READS,
    T0,
    WRITES,
    cols,
    node,
    reference_write_cell,
    row,
)


def _merge_cell(*reports: tuple[int, int, int], policy: str = "dedupe") -> tuple[int, bool]:
    """Merge one cell from (value, group, term) reports, one per node."""
    v = np.array([[r[0]] for r in reports], dtype=np.uint64)
    g = np.array([[r[1]] for r in reports], dtype=np.uint64)
    t = np.array([[r[2]] for r in reports], dtype=np.uint64)
    values, conflict = merge_writes(v, g, t, policy=policy)  # type: ignore[arg-type]
    return int(values[0]), bool(conflict[0])


def test_reads_are_summed_across_nodes() -> None:
    a = node("n1", cols(2), row("route:1", [3, 0], groups=[1, 0], terms=[2, 0]))
    b = node("n2", cols(2), row("route:1", [3, 4], groups=[1, 1], terms=[2, 2]))
    m = merge_nodes([a, b], series=READS)
    assert m.values.tolist() == [[6, 4]]
    assert not m.conflict.any()


def test_read_bytes_are_summed_across_nodes() -> None:
    a = node("n1", cols(1), row("route:1", [1000]))
    b = node("n2", cols(1), row("route:1", [24]))
    m = merge_nodes([a, b], series=admin_pb2.KEYVIZ_SERIES_READ_BYTES)
    assert m.values.tolist() == [[1024]]


def test_equal_write_reports_within_one_group_and_term_count_once() -> None:
    assert _merge_cell((5, 1, 3), (5, 1, 3), (5, 1, 3)) == (5, False)


def test_different_write_reports_within_one_group_and_term_conflict_and_take_the_max() -> None:
    assert _merge_cell((5, 1, 3), (9, 1, 3), (7, 1, 3)) == (9, True)


def test_write_reports_of_different_terms_are_summed() -> None:
    assert _merge_cell((5, 1, 3), (4, 1, 4)) == (9, False)


def test_write_reports_of_different_groups_are_summed() -> None:
    assert _merge_cell((5, 1, 3), (4, 2, 3), (4, 2, 3)) == (9, False)


def test_conflict_in_one_key_is_kept_when_other_keys_are_summed() -> None:
    assert _merge_cell((5, 1, 3), (6, 1, 3), (4, 1, 4)) == (10, True)


def test_unknown_group_falls_back_to_max_with_conflict_on_differing_values() -> None:
    assert _merge_cell((5, 1, 3), (4, 0, 3), (2, 2, 3)) == (5, True)


def test_unknown_term_falls_back_to_max_without_conflict_on_equal_values() -> None:
    assert _merge_cell((5, 1, 0), (5, 2, 3)) == (5, False)


def test_unknown_group_and_term_alone_is_the_value() -> None:
    assert _merge_cell((8, 0, 0), (0, 0, 0)) == (8, False)


def test_zero_write_reports_do_not_participate() -> None:
    # The silent node's unknown ids would otherwise force the max fallback.
    assert _merge_cell((5, 1, 3), (0, 0, 0), (4, 2, 3)) == (9, False)
    # ... and its zero would otherwise differ from 5 and set the conflict.
    assert _merge_cell((5, 1, 3), (0, 1, 3)) == (5, False)


def test_sum_policy_adds_write_reports() -> None:
    assert _merge_cell((5, 1, 3), (5, 1, 3), (2, 0, 0), policy="sum") == (12, False)


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="writes_merge must be one of"):
        _merge_cell((1, 1, 1), policy="avg")


def test_design_is_an_alias_of_dedupe() -> None:
    reports = ((5, 1, 3), (7, 1, 3), (2, 2, 1))
    assert _merge_cell(*reports, policy="design") == _merge_cell(*reports, policy="dedupe")
    assert _merge_cell(*reports, policy="dedupe") == (9, True)


def test_conflict_marks_exist_only_in_dedupe_mode() -> None:
    a = node("n1", cols(1), row("route:1", [5], groups=[1], terms=[3]))
    b = node("n2", cols(1), row("route:1", [7], groups=[1], terms=[3]))
    assert merge_nodes([a, b], series=WRITES, writes_merge="dedupe").conflict.tolist() == [[True]]
    summed = merge_nodes([a, b], series=WRITES, writes_merge="sum")
    assert (summed.values.tolist(), summed.conflict.tolist()) == ([[12]], [[False]])


def test_sum_policy_through_merge_nodes() -> None:
    a = node("n1", cols(1), row("route:1", [5], groups=[1], terms=[3]))
    b = node("n2", cols(1), row("route:1", [5], groups=[1], terms=[3]))
    assert merge_nodes([a, b], series=WRITES).values.tolist() == [[5]]
    assert merge_nodes([a, b], series=WRITES, writes_merge="sum").values.tolist() == [[10]]


def test_write_bytes_and_unspecified_series_merge_like_writes() -> None:
    a = node("n1", cols(1), row("route:1", [5], groups=[1], terms=[3]))
    b = node("n2", cols(1), row("route:1", [7], groups=[1], terms=[3]))
    for series in (admin_pb2.KEYVIZ_SERIES_WRITE_BYTES, admin_pb2.KEYVIZ_SERIES_UNSPECIFIED):
        m = merge_nodes([a, b], series=series)
        assert (m.values.tolist(), m.conflict.tolist()) == ([[7]], [[True]])
    assert merge_nodes([a, b], series=0).series == WRITES


def test_write_merge_over_nodes_with_different_rows_and_columns() -> None:
    # n2 lacks route:2 and its first column; n3 has a gap in its columns.
    a = node(
        "n1",
        cols(3),
        row("route:1", [5, 5, 5], groups=[1, 1, 1], terms=[2, 2, 2]),
        row("route:2", [1, 2, 3], groups=[1, 1, 1], terms=[2, 2, 2]),
    )
    b = node("n2", cols(2, first=T0 + 60_000), row("route:1", [5, 6], groups=[1, 1], terms=[2, 3]))
    c = node(
        "n3",
        [T0, T0 + 120_000],
        row("route:2", [9, 3], groups=[1, 1], terms=[2, 2]),
        step_ms=60_000,
    )
    m = merge_nodes([a, b, c], series=WRITES)
    assert [r.bucket_id for r in m.rows] == ["route:1", "route:2"]
    assert m.values.tolist() == [[5, 5, 11], [9, 2, 3]]
    assert m.conflict.tolist() == [[False, False, False], [True, False, False]]


ids = st.sampled_from([0, 1, 2])
report = st.tuples(st.integers(0, 4), ids, ids)


@given(st.lists(st.lists(report, min_size=1, max_size=5), min_size=1, max_size=6))
def test_write_merge_matches_the_rule_cell_by_cell(cells: list[list[tuple[int, int, int]]]) -> None:
    nodes = max(len(c) for c in cells)
    padded = [c + [(0, 0, 0)] * (nodes - len(c)) for c in cells]
    v, g, t = (
        np.array([[c[n][i] for c in padded] for n in range(nodes)], dtype=np.uint64)
        for i in range(3)
    )
    values, conflict = merge_writes(v, g, t)
    expected = [reference_write_cell(c) for c in padded]
    assert list(zip(values.tolist(), conflict.tolist(), strict=True)) == expected


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.sampled_from([0, 7, 2**40]),
                st.sampled_from([0, 1, 2**33]),
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_write_merge_with_ids_beyond_32_bits_matches_the_rule(
    cells: list[list[tuple[int, int, int]]],
) -> None:
    v, g, t = (
        np.array([[c[n][i] for c in cells] for n in range(3)], dtype=np.uint64) for i in range(3)
    )
    values, conflict = merge_writes(v, g, t)
    expected = [reference_write_cell(c) for c in cells]
    assert list(zip(values.tolist(), conflict.tolist(), strict=True)) == expected


@pytest.mark.parametrize("group", [1, 2**16, 2**32 - 1, 2**32, 2**63])
def test_write_merge_through_nodes_is_the_same_for_every_id_width(group: int) -> None:
    # Each width takes another key packing: uint32, uint64, or ranked pairs.
    a = node("n1", cols(2), row("route:1", [5, 6], groups=[group] * 2, terms=[2, 2]))
    b = node("n2", cols(2), row("route:1", [5, 4], groups=[group] * 2, terms=[2, 3]))
    m = merge_nodes([a, b], series=WRITES)
    assert m.values.tolist() == [[5, 10]]
    assert not m.conflict.any()


def test_write_merge_handles_full_uint64_values() -> None:
    big = 2**64 - 1
    assert _merge_cell((big, 1, 1), (big - 1, 1, 1)) == (big, True)


def test_nodes_with_many_row_gaps_merge_like_dense_stacks() -> None:
    # n2 has every other row (150 runs of rows): the gather-and-scatter paths, not slices.
    rng = np.random.default_rng(5)
    n_rows, n_cols = 300, 7
    dense = rng.integers(0, 4, size=(2, n_rows, n_cols)).astype(np.uint64)
    groups = np.where(dense > 0, rng.integers(1, 3, size=dense.shape), 0).astype(np.uint64)
    terms = np.where(dense > 0, 5, 0).astype(np.uint64)
    dense[1, 1::2] = 0
    groups[1, 1::2] = 0
    terms[1, 1::2] = 0
    buckets = [f"route:{i:03d}" for i in range(n_rows)]

    def rows_of(n: int, keep: range) -> list[admin_pb2.KeyVizRow]:
        return [
            row(buckets[i], dense[n, i].tolist(), groups=groups[n, i].tolist(), terms=[5] * n_cols)
            for i in keep
        ]

    a = node("n1", cols(n_cols), *rows_of(0, range(n_rows)))
    b = node("n2", cols(n_cols), *rows_of(1, range(0, n_rows, 2)))
    reads = merge_nodes([a, b], series=READS)
    assert reads.values.tolist() == dense.sum(axis=0).tolist()
    writes = merge_nodes([a, b], series=WRITES)
    expected_v, expected_c = merge_writes(dense, groups, np.full_like(terms, 5))
    assert writes.values.tolist() == expected_v.tolist()
    assert writes.conflict.tolist() == expected_c.tolist()
    assert int(expected_c.sum()) > 0
