"""The query of `GET /api/keyviz/matrix`, parsed and validated.

`?series=writes&from=<unix ms>&to=<unix ms>&rows=256&cols=1000&format=json|bin`

Every parameter is optional: writes, the hour before `now_ms`, 256 rows,
1000 columns, json. Given only `from`, the window ends now; given only `to`,
it is the hour before `to`. The window is half-open, [from, to), as on the
nodes. Errors are `ParamError(param, message)`; the view turns them into a
400 whose message names the parameter and says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from elastickv_admin.errors import ParamError
from keyviz.budgets import DEFAULT_COLS, DEFAULT_ROWS, MAX_COLS, MAX_ROWS
from proto import admin_pb2

SERIES: dict[str, int] = {
    "reads": admin_pb2.KEYVIZ_SERIES_READS,
    "writes": admin_pb2.KEYVIZ_SERIES_WRITES,
    "read_bytes": admin_pb2.KEYVIZ_SERIES_READ_BYTES,
    "write_bytes": admin_pb2.KEYVIZ_SERIES_WRITE_BYTES,
}
SERIES_NAMES: dict[int, str] = {v: k for k, v in SERIES.items()}
FORMATS: tuple[str, ...] = ("json", "bin")
Format = Literal["json", "bin"]

DEFAULT_WINDOW_MS = 60 * 60 * 1000
MAX_WINDOW_MS = 7 * 24 * 60 * 60 * 1000

# Plain ASCII digits only: int() would also take "1_000", " 7" and "٣".
_INTEGER = re.compile(r"-?[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class MatrixQuery:
    series: int  # admin_pb2.KeyVizSeries
    from_unix_ms: int
    to_unix_ms: int
    rows: int
    cols: int
    format: Format

    @property
    def series_name(self) -> str:
        return SERIES_NAMES[self.series]


def _integer(query: Mapping[str, str], name: str, what: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not _INTEGER.fullmatch(raw):
        raise ParamError(name, f"must be {what}, got {raw!r}")
    return int(raw)


def _bounded(query: Mapping[str, str], name: str, default: int, high: int, noun: str) -> int:
    value = _integer(query, name, f"a whole number of {noun} from 1 to {high}")
    if value is None:
        return default
    if not 1 <= value <= high:
        raise ParamError(name, f"must be from 1 to {high} {noun}, got {value}")
    return value


def parse_matrix_query(query: Mapping[str, str], *, now_ms: int) -> MatrixQuery:
    """Parse the matrix query; unknown parameters are ignored."""
    series_name = query.get("series") or "writes"
    if series_name not in SERIES:
        raise ParamError(
            "series", f"unknown series {series_name!r}; use one of {', '.join(SERIES)}"
        )
    ms = "milliseconds since the Unix epoch"
    start = _integer(query, "from", f"a whole number of {ms}")
    end = _integer(query, "to", f"a whole number of {ms}")
    if end is None:
        end = now_ms
    if start is None:
        start = max(0, end - DEFAULT_WINDOW_MS)
    if start < 0:
        raise ParamError("from", f"must not be negative, got {start}")
    if start >= end:
        raise ParamError("from", f"must be before to ({start} >= {end})")
    if end - start > MAX_WINDOW_MS:
        raise ParamError(
            "from",
            f"window of {end - start} ms is longer than 7 days ({MAX_WINDOW_MS} ms); "
            "move from closer to to",
        )
    fmt = query.get("format") or "json"
    if fmt not in FORMATS:
        raise ParamError("format", f"unknown format {fmt!r}; use json or bin")
    return MatrixQuery(
        series=SERIES[series_name],
        from_unix_ms=start,
        to_unix_ms=end,
        rows=_bounded(query, "rows", DEFAULT_ROWS, MAX_ROWS, "rows"),
        cols=_bounded(query, "cols", DEFAULT_COLS, MAX_COLS, "columns"),
        format="bin" if fmt == "bin" else "json",
    )
