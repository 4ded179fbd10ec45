"""Time of GET /api/keyviz/matrix served from the KeyViz store, by window and node count.

The store (the portal database: SQLite here, as by default) is filled the way the
collector fills it: 1024 buckets with traffic in every cell, merged columns with
every node listed as a contributor (and one missing node, so unknown cells are
present). Two windows, as the page asks for them (binary, 1024 rows, 1200 columns):

- 24 h: 1440 one-minute columns on tier 0;
- 30 d: 720 one-hour columns on tier 2 (written with the store's own cell encoding).

Each is measured with 3, 20 and 100 nodes' data in the store: the matrix the API
reads is the merged one, so its time must not grow with the number of nodes (only
each column's contributor list does). Printed per case: the fill, the bytes stored,
and the API's median and max over several requests with its Server-Timing phases.

    .venv/bin/python benchmarks/bench_keyviz_serve.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402

from benchmarks.signed_in import viewer_client  # noqa: E402
from keyviz import store  # noqa: E402
from keyviz.columns import FLAG_UNKNOWN, MergedColumn  # noqa: E402
from keyviz.matrix import RowMeta  # noqa: E402
from keyviz.models import TIER_1H, TIER_15M, Bucket, CollectorState, StoredColumn  # noqa: E402
from keyviz.service import COLLECTOR_STATE_KEY  # noqa: E402
from proto import admin_pb2  # noqa: E402

WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
STEP = 60_000
HOUR = 3_600_000
ROWS = 1024


def rows() -> tuple[RowMeta, ...]:
    return tuple(
        RowMeta(
            f"route:{i + 1}",
            start=b"" if i == 0 else f"k{i:05d}".encode(),
            end=b"" if i == ROWS - 1 else f"k{i + 1:05d}".encode(),
            route_ids=(i + 1,),
            route_count=1,
        )
        for i in range(ROWS)
    )


def cells(rng: np.random.Generator, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Traffic in every cell, hotter on a drifting range; row 7 unknown every 10th column."""
    values = rng.integers(1, 40, ROWS).astype(np.uint64)
    hot = (np.arange(ROWS) - c) % ROWS < ROWS // 16
    values[hot] += rng.integers(500, 5000, int(hot.sum())).astype(np.uint64)
    flags = np.zeros(ROWS, dtype=np.uint8)
    if c % 10 == 0:
        flags[7] = FLAG_UNKNOWN
    return values, flags


def clear() -> None:
    StoredColumn.objects.all().delete()
    Bucket.objects.all().delete()
    CollectorState.objects.all().delete()
    store.clear_bucket_cache()


def node_names(n_nodes: int) -> list[str]:
    return [f"n{i + 1}" for i in range(n_nodes)]


def fill_fine(rng: np.random.Generator, nodes: list[str], now: int, cols: int) -> None:
    """Tier 0, through store.save_merged as the collector writes it: `cols` one-minute
    columns ending at the last whole minute before `now`; the first node missing from
    every 10th column (its contributors are the others)."""
    meta = rows()
    first = (now // STEP - cols) * STEP
    batch: list[MergedColumn] = []
    for c in range(cols):
        t = first + (c + 1) * STEP
        values, flags = cells(rng, c)
        batch.append(
            MergedColumn(
                series=WRITES,
                column_unix_ms=t,
                step_ms=STEP,
                rows=meta,
                values=values,
                flags=flags,
                contributors=dict.fromkeys(nodes[1:], t - 700),
                missing=(nodes[0],) if c % 10 == 0 else (),
            )
        )
        if len(batch) == 120:
            store.save_merged(batch)
            batch = []
    store.save_merged(batch)


def fill_coarse(tier: int, rng: np.random.Generator, nodes: list[str], now: int, cols: int) -> None:
    """`cols` columns of a compacted tier (15 min or 1 h) ending at its last whole window
    before `now`, straight from the store's own cell encoding (compacting days of
    one-minute columns would take longer than the measurement). After fill_fine (its
    buckets), so its writes do not mark these columns dirty."""
    width = store.TIER_STEP_MS[tier]
    pks = dict(Bucket.objects.values_list("bucket_id", "pk"))
    pk_array = np.array([pks[r.bucket_id] for r in rows()], dtype=np.int64)
    first = (now // width - cols) * width
    objs = []
    for c in range(cols):
        t = first + (c + 1) * width
        values, flags = cells(rng, c)
        objs.append(
            StoredColumn(
                tier=tier,
                series=WRITES,
                column_ms=t,
                step_ms=width,
                cells=store.merged_blob(pk_array, values * (width // STEP), flags),
                contributors=dict.fromkeys(nodes, t - 700),
                missing=[],
                unknown_all=False,
                dirty=False,
                updated_ms=now,
            )
        )
    StoredColumn.objects.bulk_create(objs, batch_size=200)


def save_collector_state(nodes: list[str], now: int) -> None:
    """A collector's state, as the page and the API show it (per-node status, age)."""
    store.save_state(
        COLLECTOR_STATE_KEY,
        {
            "step_ms": STEP,
            "holder": "bench",
            "heartbeat_ms": now,
            "started_ms": now - HOUR,
            "status": [
                {"node": n, "address": f"10.0.{i // 250}.{i % 250}:50051", "ok": True}
                for i, n in enumerate(nodes)
            ],
        },
    )


def stored_bytes() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(LENGTH(cells)), 0) FROM keyviz_storedcolumn")
        (stored,) = cursor.fetchone()
    return int(stored)


def fill(n_nodes: int, now: int, day_cols: int, month_cols: int, week_cols: int = 0) -> int:
    """Tier 0: `day_cols` minutes before now; tier 1: `week_cols` quarter hours; tier 2:
    `month_cols` hours; and the collector's state. Bytes stored."""
    rng = np.random.default_rng(n_nodes)
    nodes = node_names(n_nodes)
    fill_fine(rng, nodes, now, day_cols)
    if week_cols:
        fill_coarse(TIER_15M, rng, nodes, now, week_cols)
    fill_coarse(TIER_1H, rng, nodes, now, month_cols)
    save_collector_state(nodes, now)
    return stored_bytes()


async def measure(client: Any, label: str, query: dict[str, str], runs: int) -> float:
    times: list[float] = []
    phases: dict[str, list[float]] = {}
    for _ in range(runs):
        t = time.perf_counter()
        resp = await client.get("/api/keyviz/matrix", query)
        times.append(time.perf_counter() - t)
        assert resp.status_code == 200, resp.content[:300]
        for part in resp["Server-Timing"].split(", "):
            name, ms = part.split(";dur=")
            phases.setdefault(name, []).append(float(ms))
    median = statistics.median(times) * 1000
    split = " ".join(f"{k} {statistics.median(v):.0f}" for k, v in phases.items())
    print(
        f"  {label:34} {len(resp.content) / 1e6:5.2f} MB  median {median:7.1f} ms  "
        f"max {max(times) * 1000:7.1f} ms  ({split})"
    )
    return median


async def main() -> None:
    quick = "--quick" in sys.argv
    runs = 3 if quick else 9
    day_cols, month_cols = (120, 72) if quick else (1440, 720)
    print(
        f"store-backed GET /api/keyviz/matrix: {ROWS} rows, 24 h = {day_cols} x 1 min (tier 0), "
        f"30 d = {month_cols} x 1 h (tier 2); format=bin rows=1024 cols=1200; {runs} requests"
    )
    results: dict[tuple[str, int], float] = {}
    client = await viewer_client()  # migrates the database first
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        for n_nodes in (3, 20, 100):
            now = int(time.time() * 1000)
            t = time.perf_counter()
            await sync_to_async(clear)()
            stored = await sync_to_async(fill)(n_nodes, now, day_cols, month_cols)
            print(
                f"== {n_nodes} nodes' data: filled in {time.perf_counter() - t:.1f} s, "
                f"{stored / 1e6:.1f} MB of cells stored"
            )
            base = {"series": "writes", "format": "bin", "rows": "1024", "cols": "1200"}
            for window, span in (("24h", 24 * HOUR), ("30d", 30 * 24 * HOUR)):
                query = {**base, "from": str(now - span + 1), "to": str(now + 1)}
                results[(window, n_nodes)] = await measure(
                    client, f"{window} ({n_nodes} nodes)", query, runs
                )
    for window in ("24h", "30d"):
        figures = ", ".join(f"{n} nodes {results[(window, n)]:.0f} ms" for n in (3, 20, 100))
        print(f"{window} median: {figures}")


if __name__ == "__main__":
    asyncio.run(main())
