"""KeyViz store benchmark on SQLite (the default database): printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_keyviz_store.py [--rows 1024] [--repeat 7]

Each scenario uses a fresh SQLite file with the production settings (WAL,
IMMEDIATE transactions) and reports, for 1024 rows, 4 series and a 60 s step:

1. store size per day: the DB file growth for a day of merged tier-0 columns (plus
   their 15 min and 1 h columns), then with the raw node columns of 3 nodes, for
   "realistic" traffic (60% of rows active, a few hot ones, rare soft marks) and a
   fully dense worst case (every cell non-zero, 32-bit noise values, a flag on every cell);
2. the time of one save_merged (one column) and one save_node_columns (one column
   from each of 3 and of 20 nodes);
3. read_matrix medians: 24 h x 1024 rows at tier 0 (1440 columns) and 30 d x 1024
   rows at tier 2 (720 columns);
4. compaction time for a day of tier-0 columns (4 series);
5. the cell encoding alone: bytes per column and batch decode time with and without zlib.

Times are medians of wall time, with the CPU time next to them: the machine may be
shared, and CPU time is what the code costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEP = 60_000
DAY_COLUMNS = 1440
SERIES = (1, 2, 3, 4)
T0 = 1_800_000_000_000 - (1_800_000_000_000 % 3_600_000)


def setup_django(data_dir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "ELASTICKV_ADMIN_DATA_DIR": str(data_dir),
            "ELASTICKV_ADMIN_NODES": "127.0.0.1:1",
            "ELASTICKV_ADMIN_INSECURE_NO_AUTH": "true",
            "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
            "ELASTICKV_ADMIN_AUDIT_KEY": "bench-audit-key-0123456789abcdef",
            "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "bench-token-key-0123456789abcdef",
            "ELASTICKV_ADMIN_SECRETS_KEY": "bench-secrets-key-0123456789abcdef",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()


def fresh_database(path: Path) -> None:
    """Point the default connection at a new SQLite file and migrate it."""
    from django.core.management import call_command
    from django.db import connections

    from keyviz import store

    connections["default"].close()
    connections["default"].settings_dict["NAME"] = str(path)
    call_command("migrate", verbosity=0)
    store.clear_bucket_cache()


def db_bytes() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("PRAGMA page_count")
        pages = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA freelist_count")
        free = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_size")
        size = int(cursor.fetchone()[0])
    return (pages - free) * size


def metas(rows: int) -> tuple[Any, ...]:
    from keyviz.matrix import RowMeta

    return tuple(
        RowMeta(
            bucket_id=f"b{i:05d}",
            start=b"user:%08d" % (i * 1000),
            end=b"user:%08d" % ((i + 1) * 1000),
            label=f"route {i // 4}",
            route_ids=(i // 4,),
            route_count=1,
        )
        for i in range(rows)
    )


def traffic(rng: np.random.Generator, rows: int, dense: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values uint64, flags uint8) of one column."""
    from keyviz.columns import FLAG_SOFT

    if dense:
        values = rng.integers(1, 2**32, size=rows, dtype=np.uint64)
        flags = np.full(rows, FLAG_SOFT, dtype=np.uint8)
        return values, flags
    active = rng.random(rows) < 0.6
    values = rng.geometric(0.02, size=rows).astype(np.uint64)  # mostly tens
    hot = rng.random(rows) < 0.02
    values[hot] = rng.integers(10_000, 2_000_000, size=int(hot.sum()), dtype=np.uint64)
    values[~active] = 0
    flags = np.where(rng.random(rows) < 0.01, FLAG_SOFT, 0).astype(np.uint8)
    flags[~active] = 0
    return values, flags


def merged_day(
    rng: np.random.Generator, rows: int, dense: bool, series: int, day_start: int
) -> list[Any]:
    from keyviz.columns import MergedColumn

    meta = metas(rows)
    out = []
    for k in range(1, DAY_COLUMNS + 1):
        values, flags = traffic(rng, rows, dense)
        t = day_start + k * STEP
        out.append(
            MergedColumn(
                series=series,
                column_unix_ms=t,
                step_ms=STEP,
                rows=meta,
                values=values,
                flags=flags,
                contributors={"n1": t - 400, "n2": t - 9_000, "n3": t - 31_000},
            )
        )
    return out


def node_columns(rng: np.random.Generator, rows: int, dense: bool, nodes: int, t: int) -> list[Any]:
    from keyviz.columns import NodeColumn

    meta = metas(rows)
    out = []
    for n in range(nodes):
        values, flags = traffic(rng, rows, dense)
        # Each node serves about a third of the buckets' traffic.
        values = values // max(1, nodes // 3) if not dense else values
        out.append(
            (
                t,
                NodeColumn(
                    node=f"n{n:02d}",
                    column_unix_ms=t - 100 - 1000 * n,
                    rows=meta,
                    values=values,
                    soft=flags != 0,
                    raft_group_ids=(np.arange(rows, dtype=np.uint64) // 8 + 1),
                    leader_terms=np.full(rows, 3, dtype=np.uint64),
                ),
            )
        )
    return out


CPU: list[float] = []  # CPU-time medians of the last median_ms call (the machine is shared)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time in ms; the CPU-time median goes to CPU[-1]."""
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    CPU.append(statistics.median(cpu))
    return statistics.median(times)


def encoding_scenario(rows: int, repeat: int) -> None:
    """Blob size and batch decode time of a day of columns, with and without zlib."""
    from keyviz import cellblob

    rng = np.random.default_rng(4)
    print(f"\ncell encoding, one day ({DAY_COLUMNS} columns) of {rows} rows:")
    for dense in (False, True):
        columns = []
        for _ in range(DAY_COLUMNS):
            values, flags = traffic(rng, rows, dense)
            keep = (values != 0) | (flags != 0)
            pks = np.arange(1, rows + 1, dtype=np.int64)[keep]
            columns.append((pks, {"value": values[keep], "flags": flags[keep]}))
        kind = "fully dense" if dense else "realistic"
        for label, saving in (("no zlib", 2.0), ("zlib if it saves 1/3", 1 / 3), ("zlib", 0.0)):
            cellblob.ZLIB_MIN_SAVING = saving
            blobs = [cellblob.encode(cellblob.MERGED_FIELDS, p, a) for p, a in columns]
            ms = median_ms(partial(cellblob.decode_many, cellblob.MERGED_FIELDS, blobs), repeat)
            print(
                f"  {kind:11s} {label:21s}: mean {statistics.mean(map(len, blobs)):6.0f} B/column, "
                f"decode_many {ms:5.1f} ms (CPU {CPU[-1]:.1f} ms), "
                f"{sum(b[1] for b in blobs)} of {len(blobs)} compressed"
            )
    cellblob.ZLIB_MIN_SAVING = 1 / 3


def size_scenario(work: Path, rows: int, dense: bool, label: str) -> None:
    from keyviz import store, tiers
    from keyviz.models import StoredColumn, StoredNodeColumn

    fresh_database(work / f"size-{label}.sqlite3")
    base = db_bytes()
    rng = np.random.default_rng(1)
    for series in SERIES:
        day = merged_day(rng, rows, dense, series, T0)
        for i in range(0, len(day), 60):
            store.save_merged(day[i : i + 60])
    fine = db_bytes() - base
    start = time.perf_counter()
    report = tiers.compact(T0 + DAY_COLUMNS * STEP + tiers.COMPACT_GRACE_MS)
    compact_s = time.perf_counter() - start
    merged_all = db_bytes() - base
    blob = [
        len(bytes(c)) for c in StoredColumn.objects.filter(tier=0).values_list("cells", flat=True)
    ]
    coarse = [
        len(bytes(c))
        for c in StoredColumn.objects.filter(tier__gt=0).values_list("cells", flat=True)
    ]
    for series in SERIES:
        for k in range(1, DAY_COLUMNS + 1, 20):
            batch = []
            for j in range(k, k + 20):
                batch += node_columns(rng, rows, dense, 3, T0 + j * STEP)
            store.save_node_columns(series, batch)
    with_raw = db_bytes() - base
    raw_blob = [len(bytes(c)) for c in StoredNodeColumn.objects.values_list("cells", flat=True)]
    mb = 1024 * 1024
    print(f"\n[{label}] {rows} rows x {DAY_COLUMNS} columns x {len(SERIES)} series (one day)")
    print(
        f"  merged tier 0: {fine / mb:.1f} MiB/day in the DB file, "
        f"{fine / (DAY_COLUMNS * len(SERIES)):.0f} B per column in the file, "
        f"cells blob mean {statistics.mean(blob):.0f} B "
        f"({statistics.mean(blob) / rows:.2f} B/row)"
    )
    print(
        f"  + 15 min and 1 h columns: {merged_all / mb:.1f} MiB/day "
        f"(coarse blob mean {statistics.mean(coarse):.0f} B; {report.written})"
    )
    print(
        f"  + raw node columns of 3 nodes: {with_raw / mb:.1f} MiB/day "
        f"(raw blob mean {statistics.mean(raw_blob):.0f} B)"
    )
    print(f"  compaction of the day (4 series): {compact_s * 1000:.0f} ms")


def timing_scenario(work: Path, rows: int, repeat: int) -> None:
    from keyviz import store
    from keyviz.models import TIER_1H, StoredColumn

    fresh_database(work / "timing.sqlite3")
    rng = np.random.default_rng(2)
    day = merged_day(rng, rows, False, 2, T0)
    for i in range(0, len(day), 60):
        store.save_merged(day[i : i + 60])
    # Save times: one column per call, as the collector saves them.
    t = T0 + (DAY_COLUMNS + 1) * STEP
    one = merged_day(rng, rows, False, 1, T0)[: repeat * 3]
    pending = iter(one)
    per_merged = median_ms(lambda: store.save_merged([next(pending)]), len(one))
    print(
        f"\nsave_merged, one column of {rows} rows (realistic): median {per_merged:.2f} ms "
        f"(CPU {CPU[-1]:.2f} ms)"
    )
    for nodes in (3, 20):
        columns = [node_columns(rng, rows, False, nodes, t + k * STEP) for k in range(repeat * 2)]
        batches = iter(columns)

        def save_batch(batches: Any = batches) -> None:
            store.save_node_columns(3, next(batches))

        total = median_ms(save_batch, len(columns))
        print(
            f"save_node_columns, one column from each of {nodes} nodes: median {total:.2f} ms "
            f"({total / nodes:.2f} ms per node column; CPU {CPU[-1]:.2f} ms)"
        )
    print(f"\nread_matrix (median of {repeat}, after one warm-up):")
    for dense in (False, True):
        if dense:
            fresh_database(work / "timing-dense.sqlite3")
            day = merged_day(rng, rows, True, 2, T0)
            for i in range(0, len(day), 60):
                store.save_merged(day[i : i + 60])
        got = store.read_matrix(2, T0, T0 + DAY_COLUMNS * STEP + 1, tier=0)
        assert got.matrix.shape == (rows, DAY_COLUMNS), got.matrix.shape
        ms = median_ms(
            lambda: store.read_matrix(2, T0, T0 + DAY_COLUMNS * STEP + 1, tier=0), repeat
        )
        kind = "fully dense" if dense else "realistic"
        print(
            f"  24 h x {rows} rows, tier 0 ({DAY_COLUMNS} columns, {kind}): {ms:.1f} ms "
            f"(CPU {CPU[-1]:.1f} ms)"
        )
    # 30 days of 1 h columns: written directly in the encoding compaction produces.
    from keyviz.models import Bucket

    pks = np.array(sorted(Bucket.objects.values_list("pk", flat=True))[:rows], dtype=np.int64)
    hours = 30 * 24
    StoredColumn.objects.bulk_create(
        [
            StoredColumn(
                tier=TIER_1H,
                series=2,
                column_ms=T0 + (h + 1) * 3_600_000,
                step_ms=3_600_000,
                cells=store.merged_blob(
                    pks,
                    rng.integers(1, 60 * 2**20, size=rows, dtype=np.uint64),
                    np.where(rng.random(rows) < 0.05, 1, 0).astype(np.uint8),
                ),
                contributors={"n1": 1, "n2": 2, "n3": 3},
                missing=[],
                unknown_all=False,
                updated_ms=0,
            )
            for h in range(hours)
        ],
        batch_size=200,
    )
    window = (T0, T0 + (hours + 1) * 3_600_000)
    got = store.read_matrix(2, *window, tier=TIER_1H)
    assert got.matrix.shape == (rows, hours), got.matrix.shape
    ms = median_ms(lambda: store.read_matrix(2, *window, tier=TIER_1H), repeat)
    print(f"  30 d x {rows} rows, tier 2 ({hours} columns): {ms:.1f} ms (CPU {CPU[-1]:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ekv-bench-keyviz-store."))
    setup_django(work)
    print(
        f"KeyViz store on SQLite: Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs; step {STEP // 1000} s, {len(SERIES)} series, {args.rows} rows"
    )
    encoding_scenario(args.rows, args.repeat)
    size_scenario(work, args.rows, False, "realistic")
    size_scenario(work, args.rows, True, "fully dense worst case")
    timing_scenario(work, args.rows, args.repeat)


if __name__ == "__main__":
    main()
