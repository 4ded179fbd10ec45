"""The demo's synthetic past: a week of KeyViz history written at demo start.

The columns come from the same wall-clock traffic model as the live devcluster
(devcluster/demo.py DemoModel) and use the demo catalog's bucket ids, so the map is
one picture from seven days ago into the live columns. They go through the store's
own path: tier-0 columns (save_merged), then compaction to the 15 min and 1 h tiers,
then pruning of what tier-0 retention does not keep.

Tier 0 at the demo's 1-2 s step for a whole day would be 43 200-86 400 columns per
series, minutes to write; so the last hour is at the demo's step (the default 15 min
and 1 h windows look like live data), the rest of the last day at 60 s (the nodes'
default step), and the days before at 15 min, which is what the 15 min tier keeps of
them anyway. Counts are per column, so a 60 s column holds ~30 times a 2 s one.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from devcluster.adapters import ADAPTERS
from devcluster.catalog import Route, sub_range_splits
from devcluster.demo import WRITE_SHARE, DemoKeyspace, DemoModel
from keyviz import store, tiers
from keyviz.columns import MergedColumn
from keyviz.matrix import RowMeta
from keyviz.models import Bucket, CollectorState, StoredColumn, StoredNodeColumn
from proto import admin_pb2

HISTORY_DAYS = 7
FINE_SPAN_MS = 3_600_000  # the last hour at the demo's step
MINUTE_MS = 60_000
QUARTER_MS = 15 * MINUTE_MS
DAY_MS = 86_400_000
SAMPLE_MS = MINUTE_MS  # the model is sampled at most this far apart inside a column
STATE_KEY = "demo-history"
_CHUNK = 256  # columns per model evaluation (bounded memory: chunk x keys floats)
# Mean of a lognormal(0, 0.8) factor: the live workload's value-size spread.
_SIZE_SPREAD = float(np.exp(0.8**2 / 2))


@dataclass(frozen=True)
class HistoryReport:
    synthetic_before_ms: int
    columns: int  # tier-0 columns written, all series
    rows: int
    seconds: float


def align_down(t_ms: int, width_ms: int) -> int:
    return t_ms - t_ms % width_ms


def column_times(now_ms: int, step_ms: int, days: int = HISTORY_DAYS) -> list[tuple[int, int]]:
    """(END time, width) of every synthetic column, oldest first; the last ends at or
    before `now_ms` on the demo's step grid."""
    end = align_down(now_ms, step_ms)
    fine_from = align_down(end - FINE_SPAN_MS, max(MINUTE_MS, step_ms))
    minute_from = align_down(end - DAY_MS, QUARTER_MS)
    first = align_down(end - days * DAY_MS, 3_600_000)
    out = [(t, QUARTER_MS) for t in range(first + QUARTER_MS, minute_from + 1, QUARTER_MS)]
    out += [(t, MINUTE_MS) for t in range(minute_from + MINUTE_MS, fine_from + 1, MINUTE_MS)]
    first_fine = fine_from - fine_from % step_ms + step_ms
    out += [(t, step_ms) for t in range(first_fine, end + 1, step_ms)]
    return out


def bucket_rows(
    keyspace: DemoKeyspace, routes: Sequence[Route], design: bool, key_buckets: int = 1
) -> tuple[list[RowMeta], NDArray[np.intp]]:
    """The rows the demo's nodes report for these routes (adapter rows,
    `route:<id>:<adapter>`, with `#<n>` per sub-range when `key_buckets` > 1, in key
    order) and the row of every key."""
    rows: list[RowMeta] = []
    index: dict[tuple[int, int, int], int] = {}
    key_row = np.zeros(len(keyspace.keys), dtype=np.intp)
    starts = [r.start for r in routes]
    splits: dict[int, tuple[bytes, ...]] = {}
    for k, key in enumerate(keyspace.keys):
        route = routes[bisect.bisect_right(starts, key) - 1]
        if key_buckets > 1 and route.route_id not in splits:
            splits[route.route_id] = sub_range_splits(route, keyspace.keys, key_buckets)
        cuts = splits.get(route.route_id)
        sub = bisect.bisect_right(cuts, key) if cuts is not None else 0
        adapter = int(keyspace.adapters[k])
        at = index.get((route.route_id, adapter, sub))
        if at is None:
            label = ADAPTERS[adapter]
            bucket_id, start, end = f"route:{route.route_id}:{label}", route.start, route.end
            if cuts is not None:
                edges = (route.start, *cuts, route.end)
                bucket_id, start, end = f"{bucket_id}#{sub}", edges[sub], edges[sub + 1]
            at = index[(route.route_id, adapter, sub)] = len(rows)
            rows.append(
                RowMeta(
                    bucket_id=bucket_id,
                    start=start,
                    end=end,
                    label=label,
                    route_ids=(route.route_id,),
                    route_count=1,
                    lineage_id=route.lineage_id if design else "",
                )
            )
        key_row[k] = at
    order = sorted(range(len(rows)), key=lambda i: (rows[i].start, rows[i].bucket_id))
    rank = np.empty(len(rows), dtype=np.intp)
    rank[np.array(order, dtype=np.intp)] = np.arange(len(rows))
    return [rows[i] for i in order], rank[key_row]


def _expected(
    model: DemoModel, times: Sequence[tuple[int, int]], key_row: NDArray[np.intp], n_rows: int
) -> Iterator[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Per chunk of columns: expected operations and bytes per (column, row)."""
    keys = len(model.keys)
    to_rows = np.zeros((keys, n_rows), dtype=np.float64)
    to_rows[np.arange(keys), key_row] = 1.0
    sizes = to_rows * (model.keys.sizes * _SIZE_SPREAD)[:, None]
    for lo in range(0, len(times), _CHUNK):
        chunk = times[lo : lo + _CHUNK]
        # Sample points inside each column's window, at most SAMPLE_MS apart.
        samples = [max(1, width // SAMPLE_MS) for _, width in chunk]
        points = np.concatenate(
            [
                (end - width + (np.arange(n) + 0.5) * width / n) / 1000.0
                for (end, width), n in zip(chunk, samples, strict=True)
            ]
        )
        rates = model.rates(points)
        owner = np.repeat(np.arange(len(chunk)), samples)
        widths_s = np.array([w / 1000.0 for _, w in chunk])
        per_col = np.zeros((len(chunk), keys), dtype=np.float64)
        np.add.at(per_col, owner, rates)
        per_col *= (widths_s / np.array(samples))[:, None]
        yield per_col @ to_rows, per_col @ sizes


def clear_history() -> None:
    """Drop the demo data directory's KeyViz history (a restarted demo refills it; its
    devcluster restarts empty, so nothing of it could continue)."""
    with store.writing("clearing the demo's KeyViz history"):
        StoredColumn.objects.all().delete()
        StoredNodeColumn.objects.all().delete()
        Bucket.objects.all().delete()
        CollectorState.objects.all().delete()
    store.clear_bucket_cache()


def fill_history(
    keyspace: DemoKeyspace,
    routes: Sequence[Route],
    *,
    rate: float,
    step_ms: int,
    now_ms: int,
    nodes: Sequence[str],
    design: bool,
    key_buckets: int = 1,
    seed: int = 0,
    days: int = HISTORY_DAYS,
) -> HistoryReport:
    """Replace the KeyViz history by `days` of synthetic columns ending at `now_ms`."""
    started = time.monotonic()
    clear_history()
    rng = np.random.default_rng(seed + 7)
    model = DemoModel(keyspace, rate)
    rows, key_row = bucket_rows(keyspace, routes, design, key_buckets)
    times = column_times(now_ms, step_ms, days)
    written = offset = 0
    for ops, nbytes in _expected(model, times, key_row, len(rows)):
        chunk = times[offset : offset + ops.shape[0]]
        offset += len(chunk)
        writes = rng.poisson(ops * WRITE_SHARE)
        reads = rng.poisson(ops * (1 - WRITE_SHARE))
        mean_size = np.divide(nbytes, ops, out=np.zeros_like(ops), where=ops > 0)
        noise = rng.lognormal(0.0, 0.1, ops.shape)
        series = {
            admin_pb2.KEYVIZ_SERIES_WRITES: writes,
            admin_pb2.KEYVIZ_SERIES_READS: reads,
            admin_pb2.KEYVIZ_SERIES_WRITE_BYTES: np.rint(writes * mean_size * noise),
            admin_pb2.KEYVIZ_SERIES_READ_BYTES: np.rint(reads * mean_size * noise),
        }
        columns = [
            MergedColumn(
                series=s,
                column_unix_ms=end,
                step_ms=width,
                rows=tuple(rows),
                values=values[j].astype(np.uint64),
                flags=np.zeros(len(rows), dtype=np.uint8),
                contributors=dict.fromkeys(nodes, end),
            )
            for s, values in series.items()
            for j, (end, width) in enumerate(chunk)
        ]
        store.save_merged(columns)
        written += len(columns)
    tiers.compact(now_ms)
    tiers.prune(now_ms)
    before = times[-1][0] if times else now_ms
    store.save_state(STATE_KEY, {"synthetic_before_ms": before, "columns": written})
    return HistoryReport(before, written, len(rows), time.monotonic() - started)
