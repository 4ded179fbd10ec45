"""`GET /api/keyviz/matrix` query: defaults, and errors that name the parameter."""

from __future__ import annotations

import pytest

from elastickv_admin.lib.errors import ParamError
from keyviz.params import MAX_UNIX_MS, TIER_SLACK_MS, MatrixQuery, parse_matrix_query
from proto import admin_pb2

NOW = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY


def parse(**query: str) -> MatrixQuery:
    return parse_matrix_query(query, now_ms=NOW)


def error(**query: str) -> ParamError:
    with pytest.raises(ParamError) as err:
        parse(**query)
    return err.value


def test_defaults_are_writes_over_the_last_hour_256_rows_1000_columns_json() -> None:
    assert parse() == MatrixQuery(
        series=admin_pb2.KEYVIZ_SERIES_WRITES,
        from_unix_ms=NOW - HOUR,
        to_unix_ms=NOW,
        rows=256,
        cols=1000,
        format="json",
    )


def test_empty_values_mean_the_default() -> None:
    assert parse(series="", rows="", format="") == parse()


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("reads", admin_pb2.KEYVIZ_SERIES_READS),
        ("writes", admin_pb2.KEYVIZ_SERIES_WRITES),
        ("read_bytes", admin_pb2.KEYVIZ_SERIES_READ_BYTES),
        ("write_bytes", admin_pb2.KEYVIZ_SERIES_WRITE_BYTES),
    ],
)
def test_series_names_map_to_keyviz_series(name: str, series: int) -> None:
    q = parse(series=name)
    assert q.series == series
    assert q.series_name == name


def test_unknown_series_lists_the_valid_ones() -> None:
    e = error(series="deletes")
    assert e.param == "series"
    assert e.message == (
        "unknown series 'deletes'; use one of reads, writes, read_bytes, write_bytes"
    )
    assert str(e) == f"series: {e.message}"


def test_window_is_taken_as_given() -> None:
    q = parse(**{"from": str(NOW - 5 * HOUR), "to": str(NOW - HOUR)})
    assert (q.from_unix_ms, q.to_unix_ms) == (NOW - 5 * HOUR, NOW - HOUR)


def test_only_from_given_ends_the_window_now() -> None:
    q = parse(**{"from": str(NOW - 3 * HOUR)})
    assert (q.from_unix_ms, q.to_unix_ms) == (NOW - 3 * HOUR, NOW)


def test_only_to_given_is_the_hour_before_it() -> None:
    q = parse(to=str(NOW - HOUR))
    assert (q.from_unix_ms, q.to_unix_ms) == (NOW - 2 * HOUR, NOW - HOUR)


@pytest.mark.parametrize("start", [NOW, NOW + 1])
def test_from_not_before_to_is_rejected(start: int) -> None:
    e = error(**{"from": str(start), "to": str(NOW)})
    assert e.param == "from"
    assert e.message == f"must be before to ({start} >= {NOW})"


def test_a_window_beyond_the_stores_longest_retention_is_a_400_naming_from_to_and_the_limit() -> (
    None
):
    assert parse(**{"from": str(NOW - MONTH), "to": str(NOW)}).from_unix_ms == NOW - MONTH
    # The 30 d preset, sent a moment before the server's now, is still accepted.
    late = MONTH + TIER_SLACK_MS
    assert parse(**{"from": str(NOW - late), "to": str(NOW)}).tier == 2
    e = error(**{"from": str(NOW - late - 1), "to": str(NOW)})
    assert e.param == "from"
    assert e.message == (
        f"the window from/to of {late + 1} ms is longer than the 30 days ({MONTH} ms) "
        "of history the portal keeps; move from closer to to"
    )


def test_the_window_limit_follows_the_configured_retention() -> None:
    keep = (DAY, 7 * DAY, 60 * DAY)
    q = parse_matrix_query({"from": str(NOW - 45 * DAY)}, now_ms=NOW, retention=keep)
    assert q.tier == 2
    with pytest.raises(ParamError, match="longer than the 60 days"):
        parse_matrix_query({"from": str(NOW - 61 * DAY)}, now_ms=NOW, retention=keep)


@pytest.mark.parametrize(
    ("start", "tier"),
    [
        (NOW - HOUR, 0),
        (NOW - DAY, 0),  # the 24 h preset, sent a moment before the server's now
        (NOW - DAY - 60_000, 0),
        (NOW - DAY - HOUR, 1),
        (NOW - WEEK, 1),
        (NOW - WEEK - HOUR, 2),
        (NOW - MONTH, 2),
    ],
)
def test_the_tier_is_the_finest_whose_retention_covers_the_windows_start(
    start: int, tier: int
) -> None:
    assert parse(**{"from": str(start)}).tier == tier


def test_an_old_short_window_reads_the_tier_that_still_holds_it() -> None:
    q = parse(**{"from": str(NOW - 3 * DAY), "to": str(NOW - 3 * DAY + HOUR)})
    assert q.tier == 1


def test_negative_from_is_rejected() -> None:
    e = error(**{"from": "-5", "to": "10"})
    assert (e.param, e.message) == (
        "from",
        f"must be from 0 to {MAX_UNIX_MS} milliseconds since the Unix epoch, got -5",
    )


@pytest.mark.parametrize("param", ["from", "to"])
@pytest.mark.parametrize("raw", ["9999999999999999999", str(2**63 - 1), str(MAX_UNIX_MS + 1)])
def test_times_past_the_int64_wire_field_are_rejected_naming_the_range(
    param: str, raw: str
) -> None:
    # to=9999999999999999999 overflowed the node request's int64 field: a 500 (issue #13).
    e = error(**{param: raw})
    assert e.param == param
    low = 0 if param == "from" else 1
    assert e.message == (
        f"must be from {low} to {MAX_UNIX_MS} milliseconds since the Unix epoch, got {raw}"
    )


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e9", "1_000", " 12", "12 ", "+12", "٣", "9" * 20])
@pytest.mark.parametrize("param", ["from", "to", "rows", "cols"])
def test_non_numbers_are_rejected_naming_the_parameter(param: str, raw: str) -> None:
    e = error(**{param: raw})
    assert e.param == param
    assert e.message.startswith("must be a whole number of ")
    assert e.message.endswith(f", got {raw!r}")


@pytest.mark.parametrize("rows", ["0", "1025", "-1"])
def test_rows_outside_1_to_1024_are_rejected(rows: str) -> None:
    e = error(rows=rows)
    assert (e.param, e.message) == ("rows", f"must be from 1 to 1024 rows, got {int(rows)}")


def test_rows_at_the_bounds_are_accepted() -> None:
    assert parse(rows="1").rows == 1
    assert parse(rows="1024").rows == 1024


@pytest.mark.parametrize("cols", ["0", "10001"])
def test_cols_outside_1_to_10000_are_rejected(cols: str) -> None:
    e = error(cols=cols)
    assert (e.param, e.message) == ("cols", f"must be from 1 to 10000 columns, got {int(cols)}")


def test_cols_at_the_bounds_are_accepted() -> None:
    assert parse(cols="1").cols == 1
    assert parse(cols="10000").cols == 10_000


def test_binary_format_is_accepted() -> None:
    assert parse(format="bin").format == "bin"


def test_unknown_format_is_rejected() -> None:
    e = error(format="xml")
    assert (e.param, e.message) == ("format", "unknown format 'xml'; use json or bin")


def test_unknown_parameters_are_ignored() -> None:
    assert parse(_="12345", foo="bar") == parse()
