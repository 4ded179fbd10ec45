"""DESIGN "KeyViz merge" step 1: column alignment by step, round to nearest."""

from __future__ import annotations

import numpy as np
import pytest

from keyviz.merge import DEFAULT_STEP_MS, cell_contributions, infer_step_ms, merge_nodes
from tests.unit.keyviz.keyviz_testkit import READS, STEP, T0, WRITES, cols, node, row


def _ms(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_columns_offset_by_less_than_half_a_step_land_in_the_same_column() -> None:
    a = node("n1", cols(3), row("route:1", [1, 2, 3]))
    b = node("n2", cols(3, offset=STEP // 2 - 1), row("route:1", [10, 20, 30]))
    m = merge_nodes([a, b], series=READS)
    assert m.column_unix_ms.tolist() == cols(3)
    assert m.values.tolist() == [[11, 22, 33]]
    assert m.warnings == ()


def test_columns_offset_by_more_than_half_a_step_land_in_the_next_column() -> None:
    a = node("n1", cols(3), row("route:1", [1, 2, 3]))
    b = node("n2", cols(3, offset=STEP // 2 + 1), row("route:1", [10, 20, 30]))
    m = merge_nodes([a, b], series=READS)
    assert m.column_unix_ms.tolist() == cols(4)
    assert m.values.tolist() == [[1, 12, 23, 30]]


def test_half_a_step_rounds_up() -> None:
    late = node("n1", [T0 + STEP // 2], row("route:1", [5]), step_ms=STEP)
    early = node("n2", [T0 - STEP // 2], row("route:1", [7]), step_ms=STEP)
    assert merge_nodes([late], series=READS).column_unix_ms.tolist() == [T0 + STEP]
    assert merge_nodes([early], series=READS).column_unix_ms.tolist() == [T0]


def test_merged_column_timestamps_are_step_boundaries() -> None:
    a = node("n1", cols(2, offset=12_345), row("route:1", [1, 1]))
    m = merge_nodes([a], series=READS)
    assert m.column_unix_ms.tolist() == [T0, T0 + STEP]
    assert m.step_ms == STEP


def test_step_is_inferred_from_column_spacing_despite_jitter() -> None:
    assert infer_step_ms(_ms([0, 60_002, 119_998, 180_001])) == 60_000
    assert infer_step_ms(_ms([5, 60_008])) == 60_000


def test_step_inference_ignores_a_missing_column() -> None:
    assert infer_step_ms(_ms([0, 60_000, 180_000, 240_000, 300_000])) == 60_000


def test_uncommon_steps_are_inferred_exactly_over_a_long_window() -> None:
    assert infer_step_ms(_ms([i * 1_234 for i in range(100)])) == 1_234


def test_one_column_has_no_inferable_step() -> None:
    assert infer_step_ms(_ms([T0])) is None


def test_given_step_overrides_inference() -> None:
    # Spacing says 60 s; settings say 30 s, so the columns are two 30 s steps apart.
    a = node("n1", cols(2), row("route:1", [1, 2]))
    m = merge_nodes([a], series=READS, step_ms=30_000)
    assert m.step_ms == 30_000
    assert m.column_unix_ms.tolist() == [T0, T0 + STEP]


def test_single_column_node_takes_the_other_nodes_step() -> None:
    a = node("n1", cols(3, step=10_000), row("route:1", [1, 2, 3]))
    b = node("n2", [T0 + 10_000 + 4_000], row("route:1", [100]))
    m = merge_nodes([a, b], series=READS)
    assert m.step_ms == 10_000
    assert m.values.tolist() == [[1, 102, 3]]
    assert m.warnings == ()


def test_single_column_everywhere_falls_back_to_the_default_step_with_a_warning() -> None:
    a = node("n1", [T0 + 1_000], row("route:1", [4]))
    b = node("n2", [T0 - 2_000], row("route:1", [5]))
    m = merge_nodes([a, b], series=READS)
    assert m.step_ms == DEFAULT_STEP_MS
    assert m.values.tolist() == [[9]]
    assert m.warnings == ("no node shows its column step; assumed 60000 ms (the node default)",)


def test_coarser_node_is_spread_over_the_finer_columns_preserving_its_total() -> None:
    fine = node("n1", cols(6), row("route:1", [1, 1, 1, 1, 1, 1]))
    # 180 s columns ending at T0+2S and T0+5S cover the six 60 s columns.
    coarse = node("n2", cols(2, step=3 * STEP, first=T0 + 2 * STEP), row("route:1", [7, 2]))
    m = merge_nodes([fine, coarse], series=READS)
    assert m.step_ms == STEP
    assert m.column_unix_ms.tolist() == cols(6)
    # 7 -> 2, 2, 3 and 2 -> 0, 1, 1: quotient everywhere, the remainder on the last columns.
    assert m.values.tolist() == [[3, 3, 4, 1, 2, 2]]
    assert int(m.values.sum()) == 6 + 7 + 2
    assert m.warnings == (
        "n2 reports 180000 ms columns; each is spread over 3 columns of 60000 ms and marked soft",
    )


def test_spread_cells_are_soft_where_the_coarse_value_is_not_zero() -> None:
    fine = node("n1", cols(6), row("route:1", [1, 1, 1, 1, 1, 1]))
    coarse = node("n2", cols(2, step=3 * STEP, first=T0 + 2 * STEP), row("route:1", [7, 0]))
    m = merge_nodes([fine, coarse], series=READS)
    assert m.soft.tolist() == [[True, True, True, False, False, False]]


def test_spread_write_reports_keep_their_group_and_term() -> None:
    coarse = node(
        "n1",
        cols(2, step=2 * STEP, first=T0 + STEP),
        row("route:1", [4, 6], groups=[3, 3], terms=[8, 8]),
    )
    fine = node("n2", cols(4), row("route:1", [2, 2, 3, 3], groups=[3] * 4, terms=[8] * 4))
    m = merge_nodes([coarse, fine], series=WRITES)
    # Same group and term: equal reports count once; the spread halves agree.
    assert m.values.tolist() == [[2, 2, 3, 3]]
    assert not m.conflict.any()
    assert m.soft.tolist() == [[True] * 4]


def test_steps_that_do_not_divide_rebucket_to_the_coarsest_step_with_a_warning() -> None:
    base = 1_700_000_100_000  # a multiple of 180 s, so both grids start together
    fine = node("n1", cols(6, step=60_000, first=base), row("route:1", [1, 2, 4, 8, 16, 32]))
    coarse = node("n2", cols(4, step=90_000, first=base), row("route:1", [100, 200, 300, 400]))
    m = merge_nodes([fine, coarse], series=READS)
    assert m.step_ms == 90_000
    assert m.column_unix_ms.tolist() == [base + 90_000 * j for j in range(5)]
    # Each 60 s column goes where the middle of its window falls.
    assert m.values.tolist() == [[101, 202, 312, 416, 32]]
    assert m.soft.tolist() == [[True] * 5]
    assert m.warnings == (
        "column steps 60000 ms, 90000 ms do not divide each other; "
        "re-bucketed n1 to the coarsest step, 90000 ms",
    )


def test_spreading_that_would_build_a_huge_grid_rebucket_to_the_coarsest_step() -> None:
    hour = 3_600_000
    base = T0 - T0 % hour + hour
    fine = node("n1", cols(3, step=1_000, first=base - 2_000), row("route:1", [1, 2, 3]))
    coarse = node("n2", cols(6, step=hour, first=base), row("route:1", [10, 20, 30, 40, 50, 60]))
    m = merge_nodes([fine, coarse], series=READS)
    assert m.step_ms == hour
    assert m.column_unix_ms.tolist() == cols(6, step=hour, first=base)
    assert m.values.tolist() == [[16, 20, 30, 40, 50, 60]]
    # n1's 1 s columns divide the hour exactly, so re-bucketing them is no estimate.
    assert not m.soft.any()
    assert m.warnings == (
        "column steps 1000 ms, 3600000 ms: spreading to 1000 ms would need 21600 columns; "
        "re-bucketed n1 to the coarsest step, 3600000 ms",
    )


def test_two_columns_of_one_node_in_one_merged_column_are_summed_and_reported() -> None:
    a = node(
        "n1",
        [T0, T0 + 40_000, T0 + 80_000],
        row("route:1", [1, 2, 3], groups=[1, 1, 1], terms=[5, 5, 6]),
        step_ms=STEP,
    )
    m = merge_nodes([a], series=WRITES)
    assert m.column_unix_ms.tolist() == [T0, T0 + STEP]
    assert m.values.tolist() == [[1, 5]]
    assert m.warnings == (
        "n1: 1 column(s) fell into an already used merged column and were summed "
        "(irregular flush times)",
    )
    (summed,) = cell_contributions(m, "route:1", T0 + STEP)
    # Two terms in one report: the term is unknown now, the group is still known.
    assert (summed.value, summed.raft_group_id, summed.leader_term) == (5, 1, 0)
    assert summed.node_column_unix_ms == T0 + 80_000


@pytest.mark.parametrize("step", [0, -1])
def test_non_positive_merge_step_is_refused(step: int) -> None:
    with pytest.raises(ValueError, match="step_ms must be positive"):
        merge_nodes([node("n1", cols(1), row("route:1", [1]))], step_ms=step)
