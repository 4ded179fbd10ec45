"""DESIGN "KeyViz merge" steps 2, 5, 6 and the per-cell contributions."""

from __future__ import annotations

import pytest

from keyviz.budgets import fit_to_display
from keyviz.matrix import NodeMatrix, RowMeta
from keyviz.merge import Contribution, cell_contributions, merge_nodes
from tests.unit.keyviz.keyviz_testkit import READS, STEP, T0, WRITES, cols, node, row


def test_rows_are_keyed_by_bucket_id_across_nodes() -> None:
    a = node("n1", cols(1), row("route:1", [1]), row("route:2", [2]))
    b = node("n2", cols(1), row("route:2", [3]), row("route:3", [4]))
    m = merge_nodes([a, b], series=READS)
    assert [r.bucket_id for r in m.rows] == ["route:1", "route:2", "route:3"]
    assert m.values.tolist() == [[1], [5], [4]]


def test_row_metadata_comes_from_the_first_node_by_node_id() -> None:
    later = node("n2", cols(1), row("route:1", [1], label="redis", route_ids=[1, 2], route_count=2))
    first = node("n1", cols(1), row("route:1", [1], label="dynamo", route_ids=[1], route_count=1))
    m = merge_nodes([later, first], series=READS, step_ms=STEP)
    assert m.rows == (
        RowMeta(
            bucket_id="route:1",
            start=b"route:1",
            end=b"",
            label="dynamo",
            route_ids=(1,),
            route_count=1,
        ),
    )
    assert m.warnings == ()


def test_differing_start_or_end_is_reported_as_catalog_divergence() -> None:
    a = node("n1", cols(1), row("route:1", [1], end=b"m"))
    b = node("n2", cols(1), row("route:1", [1], end=b"z"))
    c = node("n3", cols(1), row("route:1", [1], end=b"m"))
    m = merge_nodes([c, b, a], series=READS, step_ms=STEP)
    assert m.rows[0].end == b"m"
    assert m.warnings == (
        "catalog divergence: route:1 has different start/end on n1, n2; showing n1's",
    )


def test_rows_are_ordered_by_start_then_bucket_id_with_empty_start_first() -> None:
    a = node(
        "n1",
        cols(1),
        row("route:1", [1], start=b"b"),
        row("route:2", [1], start=b"a"),
        row("route:0", [1], start=b"b"),
        row("route:3", [1], start=b""),
    )
    m = merge_nodes([a], series=READS)
    assert [r.bucket_id for r in m.rows] == ["route:3", "route:2", "route:0", "route:1"]


def test_duplicate_node_ids_are_refused() -> None:
    a = node("n1", cols(1), row("route:1", [1]))
    with pytest.raises(ValueError, match="node ids repeat"):
        merge_nodes([a, a])


def test_cell_is_soft_if_any_node_marked_it_soft() -> None:
    a = node("n1", cols(3), row("route:1", [1, 1, 1], soft=[True, False, False]))
    b = node("n2", cols(3), row("route:1", [1, 1, 1], soft=[False, False, True]))
    c = node("n3", cols(3), row("route:1", [1, 1, 1]))
    m = merge_nodes([a, b, c], series=READS)
    assert m.soft.tolist() == [[True, False, True]]


def _three_groups() -> list[NodeMatrix]:
    return [
        node(
            "n1",
            cols(2),
            row("route:1", [1, 0], groups=[1, 0], terms=[4, 0]),
            row("route:2", [1, 1], groups=[2, 2], terms=[4, 4]),
            row("virtual:9", [3, 3], aggregate=True),
        ),
        node("n2", cols(2), row("route:3", [0, 5], groups=[0, 3], terms=[0, 4])),
    ]


def test_rows_whose_group_a_failed_node_leads_are_degraded_in_every_cell() -> None:
    m = merge_nodes(
        _three_groups(),
        series=READS,
        failed_nodes={"n3"},
        group_leaders={1: "n3", 2: "n1", 3: "n3"},
    )
    assert [r.bucket_id for r in m.rows] == ["route:1", "route:2", "route:3", "virtual:9"]
    assert m.degraded.tolist() == [[True, True], [False, False], [True, True], [False, False]]


def test_rows_mapped_to_a_group_a_failed_node_leads_are_degraded() -> None:
    m = merge_nodes(
        _three_groups(),
        series=READS,
        failed_nodes={"n3"},
        group_leaders={7: "n3"},
        bucket_groups={"virtual:9": 7, "route:2": 1, "route:404": 7},
    )
    assert m.degraded.tolist() == [[False, False], [False, False], [False, False], [True, True]]


def test_without_failed_leaders_nothing_is_degraded() -> None:
    m = merge_nodes(
        _three_groups(), series=READS, failed_nodes={"n9"}, group_leaders={1: "n1", 2: ""}
    )
    assert not m.degraded.any()


def _two_writers() -> list[NodeMatrix]:
    a = node(
        "n1",
        cols(2),
        row("route:1", [5, 0], groups=[1, 0], terms=[3, 0]),
        row("route:2", [2, 2], groups=[1, 1], terms=[3, 3]),
    )
    b = node("n2", cols(2, offset=1_500), row("route:1", [7, 4], groups=[1, 1], terms=[3, 4]))
    return [a, b]


def test_cell_contributions_list_each_node_with_its_group_term_and_flush_time() -> None:
    m = merge_nodes(_two_writers(), series=WRITES)
    assert m.values.tolist() == [[7, 4], [2, 2]]
    assert m.conflict.tolist() == [[True, False], [False, False]]
    assert cell_contributions(m, "route:1", T0) == [
        Contribution("n1", "route:1", T0, T0, 5, 1, 3, False),
        Contribution("n2", "route:1", T0, T0 + 1_500, 7, 1, 3, False),
    ]


def test_cell_contributions_of_a_whole_row_are_ordered_by_column_then_node() -> None:
    m = merge_nodes(_two_writers(), series=WRITES)
    assert [(c.node, c.column_unix_ms, c.value) for c in cell_contributions(m, "route:1")] == [
        ("n1", T0, 5),
        ("n2", T0, 7),
        ("n2", T0 + STEP, 4),
    ]


def test_cell_contributions_can_include_zero_reports() -> None:
    m = merge_nodes(_two_writers(), series=WRITES)
    got = cell_contributions(m, "route:1", T0 + STEP, include_zero=True)
    assert [(c.node, c.value, c.raft_group_id) for c in got] == [("n1", 0, 0), ("n2", 4, 1)]


def test_cell_contributions_of_an_aggregate_row_cover_its_members() -> None:
    m = fit_to_display(merge_nodes(_two_writers(), series=WRITES), max_rows=1)
    (agg,) = m.rows
    assert agg.member_bucket_ids == ("route:1", "route:2")
    got = cell_contributions(m, agg.bucket_id, T0)
    assert [(c.node, c.bucket_id, c.value) for c in got] == [
        ("n1", "route:1", 5),
        ("n1", "route:2", 2),
        ("n2", "route:1", 7),
    ]
    # A member can still be asked for by its own bucket id.
    assert [c.value for c in cell_contributions(m, "route:2")] == [2, 2]


def test_cell_contributions_after_the_column_budget_cover_the_wide_column() -> None:
    m = fit_to_display(merge_nodes(_two_writers(), series=WRITES), max_cols=1)
    assert m.column_unix_ms.tolist() == [T0 + STEP]
    got = cell_contributions(m, "route:1", T0 + STEP)
    assert [(c.node, c.column_unix_ms, c.value) for c in got] == [
        ("n1", T0, 5),
        ("n2", T0, 7),
        ("n2", T0 + STEP, 4),
    ]


def test_cell_contributions_of_a_spread_column_are_soft() -> None:
    fine = node("n1", cols(2), row("route:1", [1, 1], groups=[1, 1], terms=[1, 1]))
    coarse = node("n2", [T0 + STEP], row("route:1", [5], groups=[1], terms=[1]), step_ms=2 * STEP)
    m = merge_nodes([fine, coarse], series=WRITES)
    got = cell_contributions(m, "route:1", T0 + STEP)
    assert [(c.node, c.value, c.soft, c.node_column_unix_ms) for c in got] == [
        ("n1", 1, False, T0 + STEP),
        ("n2", 3, True, T0 + STEP),
    ]


def test_cell_contributions_of_unknown_rows_or_columns_raise_key_error() -> None:
    m = merge_nodes(_two_writers(), series=WRITES)
    with pytest.raises(KeyError):
        cell_contributions(m, "route:404")
    with pytest.raises(KeyError):
        cell_contributions(m, "route:1", T0 + 1)


def test_sums_that_would_overflow_uint64_are_refused() -> None:
    a = node("n1", cols(1), row("route:1", [2**63]))
    b = node("n2", cols(1), row("route:1", [2**63]))
    with pytest.raises(OverflowError, match="beyond 2\\^63"):
        merge_nodes([a, b], series=READS)
    # Large but safe values merge exactly.
    c = node("n3", cols(1), row("route:1", [2**62 + 1]))
    d = node("n4", cols(1), row("route:1", [2**62 + 3]))
    assert merge_nodes([c, d], series=READS).values.tolist() == [[2**63 + 4]]
