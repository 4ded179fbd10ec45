"""The pure numpy rules of keyviz/hot.py: rate window, share, hot_since runs, sparkline,
ranking, leadership balance and the query's 400s."""

from __future__ import annotations

import numpy as np
import pytest

from elastickv_admin.lib.errors import ParamError
from keyviz import hot

STEP = 60_000
KEEP = (24 * 3_600_000, 7 * 24 * 3_600_000, 30 * 24 * 3_600_000)
NOW = 1_800_000_000_000


def u64(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint64)


def times(n: int, end: int = 10 * STEP) -> np.ndarray:
    return np.arange(end - (n - 1) * STEP, end + 1, STEP, dtype=np.int64)


def test_window_totals_count_only_columns_whose_end_is_in_the_half_open_window() -> None:
    t = times(4)  # 7, 8, 9, 10 minutes
    values = u64([[1, 2, 4, 8]])
    # [8 min, 10 min): columns ending at 8 and 9, not 10 (half-open, END time).
    assert hot.window_totals(values, t, 8 * STEP, 10 * STEP).tolist() == [6]


def test_window_totals_of_a_window_without_columns_are_zero() -> None:
    assert hot.window_totals(u64([[5, 5]]), times(2), 0, STEP).tolist() == [0]


def test_shares_sum_to_one_and_are_zero_without_traffic() -> None:
    s = hot.shares(np.array([1, 3], dtype=np.uint64))
    assert s.tolist() == [0.25, 0.75]
    assert hot.shares(np.array([0, 0], dtype=np.uint64)).tolist() == [0.0, 0.0]


def test_hot_since_is_the_start_of_the_run_ending_at_the_newest_column() -> None:
    t = times(5)
    # Row 0 hot in the last three columns only; row 1 takes everything before.
    values = u64([[0, 0, 50, 60, 70], [100, 100, 50, 40, 30]])
    since, complete = hot.hot_since(values, t, STEP, threshold=0.5)
    assert since[0] == t[2] - STEP  # the start of the first hot column's window
    assert bool(complete[0])
    # Row 1 is below half in the newest column: not hot now.
    assert since[1] == -1


def test_hot_since_run_reaching_the_first_column_is_marked_incomplete() -> None:
    t = times(3)
    since, complete = hot.hot_since(u64([[5, 5, 5], [1, 1, 1]]), t, STEP, threshold=0.5)
    assert since[0] == t[0] - STEP
    assert not bool(complete[0])


def test_hot_since_skips_columns_without_any_traffic() -> None:
    t = times(4)
    # An idle column inside the run neither breaks it nor counts as cold.
    values = u64([[1, 9, 0, 9], [9, 1, 0, 1]])
    since, _ = hot.hot_since(values, t, STEP, threshold=0.5)
    assert since[0] == t[1] - STEP


def test_hot_since_of_an_empty_matrix_is_not_hot() -> None:
    since, _ = hot.hot_since(u64([[0, 0]]), times(2), STEP)
    assert since.tolist() == [-1]


def test_sparkline_keeps_short_rows_and_sums_long_ones_into_the_point_budget() -> None:
    short = u64([[1, 2, 3]])
    assert hot.sparkline(short, points=5).tolist() == [[1, 2, 3]]
    long = u64([list(range(8))])
    out = hot.sparkline(long, points=4)
    assert out.tolist() == [[1, 5, 9, 13]]
    assert int(out.sum()) == int(long.sum())  # nothing lost


def test_top_rows_rank_by_rate_leave_out_idle_rows_and_keep_key_order_on_ties() -> None:
    rates = np.array([1.0, 0.0, 5.0, 1.0], dtype=np.float64)
    assert hot.top_rows(rates, 10).tolist() == [2, 0, 3]
    assert hot.top_rows(rates, 1).tolist() == [2]


def test_leadership_balance_counts_members_leading_nothing() -> None:
    doc = hot.leadership_balance({1: "n1", 2: "n1", 3: "n2", 4: ""}, ["n1", "n2", "n3"])
    assert doc["groups_led"] == [
        {"node_id": "n1", "groups": 2},
        {"node_id": "n2", "groups": 1},
        {"node_id": "n3", "groups": 0},
    ]
    assert doc["imbalance"] == 2
    assert doc["groups_with_leader"] == 3


def test_preset_window_ends_now_and_reads_an_hour_of_lookback() -> None:
    q = hot.parse_hot_query({"window": "5m"}, now_ms=NOW, retention=KEEP)
    assert (q.from_ms, q.to_ms) == (NOW - 300_000, NOW)
    assert q.read_from_ms == NOW - 3_600_000
    assert q.tier == 0


def test_a_past_from_to_window_reads_the_tier_that_covers_it() -> None:
    day = 24 * 3_600_000
    q = hot.parse_hot_query(
        {"from": str(NOW - 29 * day), "to": str(NOW - 28 * day)}, now_ms=NOW, retention=KEEP
    )
    assert q.tier == 2
    assert q.window == ""


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"window": "7m"}, "window"),
        ({"window": "5m", "from": "1"}, "window"),
        ({"series": "deletes"}, "series"),
        ({"from": "soon"}, "from"),
        ({"to": "-5"}, "to"),
        ({"from": "20", "to": "10"}, "from"),
        ({"from": "1", "to": str(NOW)}, "from"),  # longer than the history kept
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    params: dict[str, str], named: str
) -> None:
    with pytest.raises(ParamError) as caught:
        hot.parse_hot_query(params, now_ms=NOW, retention=KEEP)
    assert caught.value.param == named
