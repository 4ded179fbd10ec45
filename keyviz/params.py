"""The query of `GET /api/keyviz/matrix`, parsed and validated.

`?series=writes&from=<unix ms>&to=<unix ms>&rows=256&cols=1000&format=json|bin`
`&start_key=<base64url>&end_key=<base64url>&step_ms=<ms>`

Every parameter is optional: writes, the hour before `now_ms`, 256 rows,
1000 columns, json, the whole key space. Given only `from`, the window ends
now; given only `to`, it is the hour before `to`. The window is half-open,
[from, to), as on the nodes. `start_key` / `end_key` (raw key bytes in
base64url, RFC 4648 section 5, padding optional) keep only the rows whose key
range meets [start_key, end_key); empty means the smallest key / +infinity.
The rows are restricted before the row budget, so a zoom into a key range is
re-bucketed for real. `step_ms` is accepted for older pages and ignored: the
store knows the step of every column it holds.

The window may be as long as the store keeps history (its coarsest tier's
retention, 30 days by default); a longer one is a 400 naming `from`/`to` and
the limit. The tier read is chosen from the window (`tier_for_window`): the
finest tier whose retention still covers `from`, so the last 24 h come at the
nodes' step, a week in 15 min columns and a month in 1 h columns. Errors are
`ParamError(param, message)`; the view turns them into a 400 whose message
names the parameter and says what to fix. Every number is checked
against its range here (`from`/`to` 0 to MAX_UNIX_MS, `rows`, `cols`, `step_ms` from 1 to
their cap), so nothing out of range reaches the int64 fields of a node request.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from elastickv_admin.lib.errors import ParamError
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
MAX_STEP_MS = 24 * 60 * 60 * 1000
# Times are int64 on the wire; the portal takes them up to the end of year 9999 (UTC).
MAX_UNIX_MS = 253_402_300_799_999
HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS


# Keys are raw bytes; a zoom boundary is one of the row boundaries the page already has.
MAX_KEY_BYTES = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

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
    start_key: bytes = b""  # smallest key when empty
    end_key: bytes = b""  # +infinity when empty
    step_ms: int | None = None  # ignored (older pages send it): the store knows the step
    tier: int = 0  # store tier read: 0 nodes' step, 1 15 min, 2 1 h (tier_for_window)

    @property
    def series_name(self) -> str:
        return SERIES_NAMES[self.series]

    @property
    def key_range(self) -> bool:
        """Whether the query keeps only part of the key space."""
        return bool(self.start_key or self.end_key)


def _integer(query: Mapping[str, str], name: str, low: int, high: int, noun: str) -> int | None:
    """A whole number from ``low`` to ``high``, or None when absent; the error names the
    parameter and the range, whatever came (text, a float, 30 digits)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    what = f"a whole number of {noun} from {low} to {high}"
    if not _INTEGER.fullmatch(raw):
        raise ParamError(name, f"must be {what}, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ParamError(name, f"must be from {low} to {high} {noun}, got {value}")
    return value


def _bounded(query: Mapping[str, str], name: str, default: int, high: int, noun: str) -> int:
    value = _integer(query, name, 1, high, noun)
    return default if value is None else value


def _key(query: Mapping[str, str], name: str) -> bytes:
    raw = query.get(name) or ""
    if not raw:
        return b""
    what = "a key in base64url (RFC 4648 section 5: A-Z a-z 0-9 - _, padding optional)"
    body = raw.rstrip("=")
    if len(raw) - len(body) > 2 or len(body) > 2 * MAX_KEY_BYTES:
        raise ParamError(name, f"must be {what} of at most {MAX_KEY_BYTES} bytes")
    if not _BASE64URL.fullmatch(body):
        raise ParamError(name, f"must be {what}, got {raw[:40]!r}")
    try:
        key = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ParamError(
            name, f"must be {what}; {len(body)} characters do not make whole bytes"
        ) from None
    if len(key) > MAX_KEY_BYTES:
        raise ParamError(name, f"is a {len(key)}-byte key; at most {MAX_KEY_BYTES} bytes")
    return key


def retention_ms() -> tuple[int, int, int]:
    """How long the store keeps each tier, in ms, from the portal's settings."""
    from elastickv_admin.lib.config import portal_config

    config = portal_config()
    return (
        config.keyviz_retention_fine_ms,
        config.keyviz_retention_15m_ms,
        config.keyviz_retention_1h_ms,
    )


# A preset window ("24h", "30d") starts a request's latency before the server's now:
# that much older than a retention is still read from the finer tier, and that much
# longer than the longest retention is still accepted.
TIER_SLACK_MS = 5 * 60 * 1000


def tier_for_window(from_ms: int, now_ms: int, retention: tuple[int, int, int]) -> int:
    """The finest tier whose retention still covers the window's start."""
    age = now_ms - from_ms
    for tier, keep in enumerate(retention):
        if age <= keep + TIER_SLACK_MS:
            return tier
    return len(retention) - 1


def _duration(ms: int) -> str:
    if ms % DAY_MS == 0:
        return f"{ms // DAY_MS} days"
    if ms % HOUR_MS == 0:
        return f"{ms // HOUR_MS} hours"
    return f"{ms} ms"


def parse_matrix_query(
    query: Mapping[str, str],
    *,
    now_ms: int,
    retention: tuple[int, int, int] | None = None,
) -> MatrixQuery:
    """Parse the matrix query; unknown parameters are ignored. `retention` (ms per tier)
    defaults to the portal's settings."""
    keep = retention if retention is not None else retention_ms()
    longest = max(keep)
    series_name = query.get("series") or "writes"
    if series_name not in SERIES:
        raise ParamError(
            "series", f"unknown series {series_name!r}; use one of {', '.join(SERIES)}"
        )
    ms = "milliseconds since the Unix epoch"
    start = _integer(query, "from", 0, MAX_UNIX_MS, ms)
    end = _integer(query, "to", 1, MAX_UNIX_MS, ms)
    if end is None:
        end = now_ms
    if start is None:
        start = max(0, end - DEFAULT_WINDOW_MS)
    if start >= end:
        raise ParamError("from", f"must be before to ({start} >= {end})")
    if end - start > longest + TIER_SLACK_MS:
        raise ParamError(
            "from",
            f"the window from/to of {end - start} ms is longer than the "
            f"{_duration(longest)} ({longest} ms) of history the portal keeps; "
            "move from closer to to",
        )
    fmt = query.get("format") or "json"
    if fmt not in FORMATS:
        raise ParamError("format", f"unknown format {fmt!r}; use json or bin")
    start_key, end_key = _key(query, "start_key"), _key(query, "end_key")
    if end_key and start_key >= end_key:
        raise ParamError(
            "start_key", "must sort before end_key (the range is [start_key, end_key))"
        )
    return MatrixQuery(
        series=SERIES[series_name],
        from_unix_ms=start,
        to_unix_ms=end,
        rows=_bounded(query, "rows", DEFAULT_ROWS, MAX_ROWS, "rows"),
        cols=_bounded(query, "cols", DEFAULT_COLS, MAX_COLS, "columns"),
        format="bin" if fmt == "bin" else "json",
        start_key=start_key,
        end_key=end_key,
        step_ms=_bounded(query, "step_ms", 0, MAX_STEP_MS, "milliseconds") or None,
        tier=tier_for_window(start, now_ms, keep),
    )


# The heatmap's window presets (the page's range=...): the page reads their lengths from
# page_config (static/js/keyviz-state.js), the no-JavaScript table (keyviz/hot.py) from here.
WINDOW_PRESETS = (
    ("15m", "15 m"),
    ("1h", "1 h"),
    ("6h", "6 h"),
    ("24h", "24 h"),
    ("7d", "7 d"),
    ("30d", "30 d"),
)
WINDOW_PRESET_MS = {
    "15m": 15 * 60_000,
    "1h": 3_600_000,
    "6h": 6 * 3_600_000,
    "24h": 24 * 3_600_000,
    "7d": 7 * 24 * 3_600_000,
    "30d": 30 * 24 * 3_600_000,
}
DEFAULT_PRESET = "1h"
