"""Hot ranges: the key ranges carrying the most traffic, from the KeyViz store.

`GET /api/keyviz/hot-ranges?series=writes&window=5m` (README "Hot ranges").

One store read covers the window and, before it, enough history for the sparkline
and for `hot_since`: [to - max(window, 1 h), to), on the tier `tier_for_window` picks
for that start. The sparkline is that whole read in at most 60 points (the last hour
for a preset window; the window itself for a longer from/to). The numpy parts below
are pure (matrix in, arrays out):

- a range's rate is its count over the window divided by the window's seconds;
- its share is its part of the cluster's count over the window;
- it is hot in a column when its part of that column's cluster count is at least
  HOT_SHARE; `hot_since` is the start of its unbroken run of hot columns ending at the
  newest column with traffic (columns without any traffic neither break nor extend a
  run); null when it is not hot there. A run that reaches the start of what was read
  sets `hot_since_complete` false: the range was hot at least since then.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.db import DatabaseError
from numpy.typing import NDArray

from elastickv_admin.lib.errors import ParamError
from keyviz import store
from keyviz.keys import KeyPreview, key_preview
from keyviz.matrix import MergedMatrix
from keyviz.models import Bucket
from keyviz.params import (
    DEFAULT_PRESET,
    MAX_UNIX_MS,
    SERIES,
    SERIES_NAMES,
    WINDOW_PRESET_MS,
    parse_matrix_query,
    retention_ms,
    tier_for_window,
)
from keyviz.serialize import row_metadata

log = logging.getLogger(__name__)

HOT_SHARE = 0.10  # a range carrying 10 % of a column's cluster traffic is hot
WINDOWS: dict[str, int] = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "60m": 3_600_000}
DEFAULT_WINDOW = "5m"
LOOKBACK_MS = 3_600_000  # sparkline and hot_since history before `to`, at least
SPARK_POINTS = 60
DEFAULT_LIMIT = 20
MAX_LIMIT = 1024

U64 = NDArray[np.uint64]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


# -- pure numpy ---------------------------------------------------------------------------


def window_totals(values: U64, column_unix_ms: I64, from_ms: int, to_ms: int) -> U64:
    """Per row, the sum of the columns whose END time is in [from_ms, to_ms)."""
    lo, hi = np.searchsorted(column_unix_ms, [from_ms, to_ms], side="left")
    if hi <= lo:
        return np.zeros(values.shape[0], dtype=np.uint64)
    return np.asarray(values[:, lo:hi].sum(axis=1, dtype=np.uint64), dtype=np.uint64)


def shares(totals: U64) -> F64:
    """Each row's part of the sum of all rows (0 everywhere when nothing happened)."""
    whole = float(totals.sum(dtype=np.float64))
    if whole <= 0:
        return np.zeros(totals.shape[0], dtype=np.float64)
    return np.asarray(totals.astype(np.float64) / whole, dtype=np.float64)


def hot_since(
    values: U64, column_unix_ms: I64, step_ms: int, threshold: float = HOT_SHARE
) -> tuple[I64, NDArray[np.bool_]]:
    """Per row, the start (ms) of its run of hot columns ending at the newest column with
    traffic, -1 when not hot there; and whether the run is complete (it does not reach the
    first column read). Columns with no traffic at all are skipped."""
    n_rows = values.shape[0]
    since = np.full(n_rows, -1, dtype=np.int64)
    complete = np.ones(n_rows, dtype=np.bool_)
    column_totals = values.sum(axis=0, dtype=np.float64)
    active = np.flatnonzero(column_totals > 0)
    if not n_rows or not active.shape[0]:
        return since, complete
    hot = values[:, active].astype(np.float64) >= threshold * column_totals[active]
    now_hot = hot[:, -1]
    # Index (among active columns) of the last cold column before the run, -1 if none.
    cold_reversed = ~hot[:, ::-1]
    any_cold = cold_reversed.any(axis=1)
    last_cold = np.where(any_cold, hot.shape[1] - 1 - np.argmax(cold_reversed, axis=1), -1).astype(
        np.intp
    )
    first_hot = last_cold + 1
    starts = column_unix_ms[active[np.minimum(first_hot, active.shape[0] - 1)]] - step_ms
    since[now_hot] = starts[now_hot]
    complete[now_hot] = any_cold[now_hot]
    return since, complete


def sparkline(values: U64, points: int = SPARK_POINTS) -> U64:
    """Each row's newest columns summed into at most `points` points (oldest first)."""
    n_cols = values.shape[1]
    if n_cols <= points:
        return values
    edges = np.linspace(0, n_cols, points + 1).astype(np.intp)[:-1]
    return np.asarray(np.add.reduceat(values, edges, axis=1), dtype=np.uint64)


def top_rows(rates: F64, limit: int) -> NDArray[np.intp]:
    """The indexes of the `limit` rows with a positive rate, highest first (ties: key order)."""
    positive = np.flatnonzero(rates > 0)
    order = positive[np.argsort(-rates[positive], kind="stable")]
    return order[:limit]


# -- query ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HotQuery:
    series: int
    from_ms: int
    to_ms: int
    read_from_ms: int  # the store read starts here (window plus lookback)
    tier: int
    limit: int
    window: str  # the preset, "" for a from/to window

    @property
    def series_name(self) -> str:
        return SERIES_NAMES[self.series]


def parse_hot_query(
    query: Mapping[str, str], *, now_ms: int, retention: tuple[int, int, int] | None = None
) -> HotQuery:
    """`series`, `window` (1m 5m 15m 60m) ending at `to` (default now), or `from`/`to`;
    `limit` 1..1024. Errors name the parameter."""
    keep = retention if retention is not None else retention_ms()
    window = query.get("window") or ""
    if window and window not in WINDOWS:
        raise ParamError(
            "window", f"unknown window {window[:20]!r}; use one of {', '.join(WINDOWS)}"
        )
    if window and query.get("from"):
        raise ParamError("window", "give either window (ending at to or now) or from/to, not both")
    if not window and not query.get("from"):
        window = DEFAULT_WINDOW
    checked: dict[str, str] = {"series": query.get("series") or "writes"}
    for name in ("from", "to"):
        if query.get(name):
            checked[name] = query[name]
    if window:
        # The window ends at `to` (checked first: a bad `to` is named, not `from`).
        end = parse_matrix_query(checked, now_ms=now_ms, retention=keep).to_unix_ms
        checked["from"] = str(max(0, end - WINDOWS[window]))
        checked["to"] = str(end)
    parsed = parse_matrix_query(checked, now_ms=now_ms, retention=keep)
    raw_limit = query.get("limit") or ""
    limit = DEFAULT_LIMIT
    if raw_limit:
        if not raw_limit.isascii() or not raw_limit.isdigit() or len(raw_limit) > 5:
            raise ParamError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
        if not 1 <= limit <= MAX_LIMIT:
            raise ParamError("limit", f"must be from 1 to {MAX_LIMIT}, got {limit}")
    read_from = max(0, min(parsed.from_unix_ms, parsed.to_unix_ms - LOOKBACK_MS))
    return HotQuery(
        series=parsed.series,
        from_ms=parsed.from_unix_ms,
        to_ms=min(parsed.to_unix_ms, MAX_UNIX_MS),
        read_from_ms=read_from,
        tier=tier_for_window(read_from, now_ms, keep),
        limit=limit,
        window=window,
    )


# -- service --------------------------------------------------------------------------------


class StoreUnavailable(Exception):
    """The store could not be read."""


@dataclass(frozen=True)
class HotRanges:
    query: HotQuery
    matrix: MergedMatrix  # the whole read: lookback plus window
    tier: int
    total_rate_per_s: float
    entries: list[dict[str, Any]]
    total_count: int = 0  # every row's count over the window


def _b64url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def compute(q: HotQuery, matrix: MergedMatrix, tier: int) -> HotRanges:
    """The hot ranges of a matrix read for `q` (no leaders, no group ids yet)."""
    values, times = matrix.values, matrix.column_unix_ms
    seconds = (q.to_ms - q.from_ms) / 1000
    totals = window_totals(values, times, q.from_ms, q.to_ms)
    rates = totals.astype(np.float64) / seconds
    share = shares(totals)
    since, complete = hot_since(values, times, matrix.step_ms)
    chosen = top_rows(rates, q.limit)
    # The whole read: the last hour for a preset window, the window itself when longer.
    spark = sparkline(values[chosen])
    spark_n = spark.shape[1]
    spark_step = (int(times[-1]) - int(times[0]) + matrix.step_ms) // spark_n if spark_n else 0
    entries: list[dict[str, Any]] = []
    for k, i in enumerate(chosen.tolist()):
        row = matrix.rows[i]
        doc = row_metadata(row)
        doc.update(
            rank=k + 1,
            start_key=_b64url(row.start),
            end_key=_b64url(row.end),
            count=int(totals[i]),
            rate_per_s=float(rates[i]),
            share=float(share[i]),
            hot=bool(since[i] >= 0),
            hot_since_unix_ms=int(since[i]) if since[i] >= 0 else None,
            hot_since_complete=bool(complete[i]) if since[i] >= 0 else None,
            sparkline=[int(v) for v in spark[k].tolist()],
            sparkline_step_ms=spark_step,
        )
        entries.append(doc)
    total = int(totals.sum(dtype=np.uint64))
    return HotRanges(q, matrix, tier, total / seconds, entries, total)


def _group_ids(bucket_ids: Sequence[str]) -> dict[str, int]:
    rows = Bucket.objects.filter(bucket_id__in=list(bucket_ids)).values_list(
        "bucket_id", "raft_group_id"
    )
    return {b: int(g) for b, g in rows}


def read_hot(q: HotQuery) -> HotRanges:
    """The hot ranges from the store (sync: one matrix read and one Bucket query)."""
    stored = store.read_matrix(q.series, q.read_from_ms, q.to_ms, tier=q.tier, contributors=False)
    hot = compute(q, stored.matrix, stored.tier)
    groups = _group_ids([e["bucket_id"] for e in hot.entries])
    for e in hot.entries:
        e["raft_group_id"] = groups.get(e["bucket_id"], 0)
    return hot


# -- the Key Visualizer without JavaScript ----------------------------------------------------

NOSCRIPT_ROWS = 10
NOSCRIPT_WINDOW = "60m"  # the heatmap's default window, 1 h


@dataclass(frozen=True, slots=True)
class HottestRow:
    start: KeyPreview
    end: KeyPreview
    count: int
    share_pct: float


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """The hottest rows of a window and their totals; `error` says why there are none."""

    series: str
    from_ms: int
    to_ms: int
    total: int
    rows: list[HottestRow]
    error: str = ""


def window_summary(params: Mapping[str, str], *, now_ms: int) -> WindowSummary:
    """What the Key Visualizer shows without JavaScript: the heatmap's series over its
    custom from/to, else its preset range (the last hour by default), its hottest rows,
    from the store. A bad parameter or an unreadable store is a message, never an
    exception."""
    query = {"series": params.get("series") or "writes", "limit": str(NOSCRIPT_ROWS)}
    preset = WINDOW_PRESET_MS.get(params.get("range") or DEFAULT_PRESET)
    if params.get("from") and params.get("to"):
        query.update({"from": params["from"], "to": params["to"]})
    elif preset is not None:
        query.update({"from": str(now_ms - preset), "to": str(now_ms)})
    else:
        query["window"] = NOSCRIPT_WINDOW
    try:
        q = parse_hot_query(query, now_ms=now_ms)
    except ParamError as exc:
        return WindowSummary(query["series"][:20], 0, 0, 0, [], str(exc))
    try:
        hot = read_hot(q)
    except (store.StoreError, DatabaseError) as exc:
        error = f"the KeyViz history could not be read from the portal database: {exc}"
        return WindowSummary(q.series_name, q.from_ms, q.to_ms, 0, [], error)
    by_bucket = {row.bucket_id: row for row in hot.matrix.rows}
    rows = [
        HottestRow(
            key_preview(by_bucket[e["bucket_id"]].start),
            key_preview(by_bucket[e["bucket_id"]].end, is_end=True),
            e["count"],
            e["share"] * 100,
        )
        for e in hot.entries
    ]
    return WindowSummary(q.series_name, q.from_ms, q.to_ms, hot.total_count, rows)


def leadership_balance(leaders: Mapping[int, str], members: Sequence[str]) -> dict[str, Any]:
    """Groups led per node (every member, 0 included) and the imbalance (most - fewest)."""
    per_node: dict[str, int] = dict.fromkeys(members, 0)
    for leader in leaders.values():
        if leader:
            per_node[leader] = per_node.get(leader, 0) + 1
    counts = list(per_node.values())
    return {
        "groups_led": [{"node_id": n, "groups": c} for n, c in sorted(per_node.items())],
        "imbalance": (max(counts) - min(counts)) if counts else 0,
        "groups_with_leader": sum(1 for v in leaders.values() if v),
        "groups": len(leaders),
    }


async def _leaders() -> tuple[dict[int, str], list[str]]:
    """Raft group -> current leader node id, and the members' node ids, from cluster health."""
    from cluster.services import cluster_health

    health = await cluster_health()
    leaders = {gid: c.leader for gid, c in health.consensus.items()}
    return leaders, [n.label for n in health.nodes]


async def fetch_hot_ranges(q: HotQuery) -> dict[str, Any]:
    """The API document: entries with their current leader, plus the leadership balance."""
    try:
        hot = await sync_to_async(read_hot)(q)
    except (store.StoreError, DatabaseError) as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
    leaders, members = await _leaders()
    for e in hot.entries:
        e["leader_node_id"] = leaders.get(e["raft_group_id"], "")
    return {
        "series": q.series_name,
        "window": q.window or None,
        "from_unix_ms": q.from_ms,
        "to_unix_ms": q.to_ms,
        "tier": hot.tier,
        "step_ms": hot.matrix.step_ms,
        "hot_share_threshold": HOT_SHARE,
        "total_rate_per_s": hot.total_rate_per_s,
        "entries": hot.entries,
        "leadership": leadership_balance(leaders, members),
    }


# -- metrics --------------------------------------------------------------------------------

METRIC_SERIES = ("reads", "writes")
METRIC_WINDOW = "5m"
_metric_cache: dict[str, tuple[int, list[tuple[str, str, float]]]] = {}


def _series_figures(series: str, now_ms: int) -> list[tuple[str, str, float]]:
    """(metric, series, value) of one series over the last METRIC_WINDOW, cached until the
    store's newest column of the series changes (a scrape between steps reads nothing)."""
    code = SERIES[series]
    newest = store.latest_column_ms(code)
    cached = _metric_cache.get(series)
    if cached is not None and cached[0] == newest:
        return cached[1]
    end = (newest + 1) if newest is not None else now_ms
    q = parse_hot_query({"series": series, "window": METRIC_WINDOW, "to": str(end)}, now_ms=now_ms)
    q = HotQuery(q.series, q.from_ms, q.to_ms, q.read_from_ms, q.tier, MAX_LIMIT, q.window)
    stored = store.read_matrix(code, q.read_from_ms, q.to_ms, tier=q.tier, contributors=False)
    hot = compute(q, stored.matrix, stored.tier)
    top = hot.entries[0] if hot.entries else None
    top_since = top["hot_since_unix_ms"] if top else None
    figures = [
        ("top_share", series, float(top["share"]) if top else 0.0),
        ("ranges_over_threshold", series, float(sum(1 for e in hot.entries if e["hot"]))),
        ("top_hot_seconds", series, max(0.0, (end - top_since) / 1000) if top_since else 0.0),
    ]
    if newest is not None:
        _metric_cache[series] = (newest, figures)
    return figures


def metric_figures(now_ms: int | None = None) -> list[tuple[str, str, float]]:
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return [f for s in METRIC_SERIES for f in _series_figures(s, now)]


_HELP = {
    "top_share": "Share of the cluster's traffic (last 5 min) carried by the hottest key range",
    "ranges_over_threshold": "Key ranges at or above the hot share threshold in the newest column",
    "top_hot_seconds": "How long the hottest key range has stayed above the hot share threshold",
}


def metrics_text(figures: Sequence[tuple[str, str, float]]) -> bytes:
    """Prometheus exposition of the figures (labels: series only, from a closed set)."""
    lines: list[str] = []
    for name, help_text in _HELP.items():
        metric = f"elastickv_admin_keyviz_hot_{name}"
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        for figure, series, value in figures:
            if figure == name and series in METRIC_SERIES:
                lines.append(f'{metric}{{series="{series}"}} {value!r}')
    return ("\n".join(lines) + "\n").encode("ascii")


__all__ = [
    "HOT_SHARE",
    "WINDOWS",
    "HotQuery",
    "HotRanges",
    "StoreUnavailable",
    "WindowSummary",
    "fetch_hot_ranges",
    "hot_since",
    "leadership_balance",
    "metric_figures",
    "metrics_text",
    "parse_hot_query",
    "shares",
    "sparkline",
    "top_rows",
    "window_summary",
    "window_totals",
]


async def hot_metrics_text() -> bytes:
    """The hot range gauges for /metrics, computed on scrape from the store (cached until a
    new column is stored, so a scrape between collector steps reads two rows of state). Not
    exported when the store cannot be read: the rest of /metrics still is."""
    try:
        figures = await sync_to_async(metric_figures)()
    except Exception:  # a metrics scrape must not fail on the KeyViz store
        log.warning("hot range metrics skipped: the KeyViz store could not be read", exc_info=True)
        return b""
    return metrics_text(figures)
