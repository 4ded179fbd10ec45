"""Hot ranges API benchmark on SQLite: printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_keyviz_hot.py [--rows 1024] [--repeat 7]

The work behind `GET /api/keyviz/hot-ranges` for `rows` rows (realistic traffic,
benchmarks/bench_keyviz_store.py): the store read (window plus the hour of lookback),
the numpy ranking / share / hot_since / sparkline, the Bucket query for the Raft group
ids and the JSON encoding of the answer, for

1. window=60m: one hour of tier-0 columns (60 columns at a 60 s step);
2. from/to over 30 days: 720 tier-2 (1 h) columns;

and the Key Visualizer page's <noscript> table (hot.window_summary, the same read for
the page's hour), which every load of the page computes.

The leaders (cluster health, one fan-out that the cluster pages share) are left out:
they cost a node round trip, not store work. Target: median under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_keyviz_store as kit

HOUR = 3_600_000


def run(rows: int, repeat: int) -> None:
    from keyviz import hot, store
    from keyviz.models import TIER_1H, Bucket, StoredColumn

    work = Path(tempfile.mkdtemp(prefix="ekv-bench-keyviz-hot."))
    kit.fresh_database(work / "hot.sqlite3")
    rng = np.random.default_rng(3)
    hour = kit.merged_day(rng, rows, False, 2, kit.T0)[:60]
    store.save_merged(hour)
    end = kit.T0 + 60 * kit.STEP + 1
    q = hot.parse_hot_query({"series": "writes", "window": "60m", "to": str(end)}, now_ms=end)
    q = hot.HotQuery(q.series, q.from_ms, q.to_ms, q.read_from_ms, q.tier, 1024, q.window)

    def answer(query: hot.HotQuery) -> int:
        doc = hot.read_hot(query)
        return len(json.dumps({"entries": doc.entries}))

    size = answer(q)
    ms = kit.median_ms(lambda: answer(q), repeat)
    print(
        f"window=60m, {rows} rows x 60 columns (tier 0), all {rows} entries: "
        f"median {ms:.1f} ms (CPU {kit.CPU[-1]:.1f} ms), JSON {size / 1024:.0f} KiB"
    )
    q20 = hot.HotQuery(q.series, q.from_ms, q.to_ms, q.read_from_ms, q.tier, 20, q.window)
    size = answer(q20)
    ms = kit.median_ms(lambda: answer(q20), repeat)
    print(
        f"window=60m, top 20 (the default limit): median {ms:.1f} ms "
        f"(CPU {kit.CPU[-1]:.1f} ms), JSON {size / 1024:.1f} KiB"
    )
    # The Key Visualizer page's <noscript> table, computed on every load of the page.
    window = {"from": str(end - HOUR), "to": str(end)}
    assert len(hot.window_summary(window, now_ms=end).rows) == hot.NOSCRIPT_ROWS
    ms = kit.median_ms(lambda: len(hot.window_summary(window, now_ms=end).rows), repeat)
    print(
        f"heatmap page <noscript> table (window_summary, 1 h, top {hot.NOSCRIPT_ROWS}): "
        f"median {ms:.1f} ms (CPU {kit.CPU[-1]:.1f} ms)"
    )
    pks = np.array(sorted(Bucket.objects.values_list("pk", flat=True))[:rows], dtype=np.int64)
    hours = 30 * 24
    StoredColumn.objects.bulk_create(
        [
            StoredColumn(
                tier=TIER_1H,
                series=2,
                column_ms=kit.T0 + (h + 1) * HOUR,
                step_ms=HOUR,
                cells=store.merged_blob(
                    pks,
                    rng.integers(1, 60 * 2**20, size=rows, dtype=np.uint64),
                    np.zeros(rows, dtype=np.uint8),
                ),
                contributors={"n1": 1},
                missing=[],
                unknown_all=False,
                updated_ms=0,
            )
            for h in range(hours)
        ],
        batch_size=200,
    )
    end = kit.T0 + hours * HOUR + 1
    for limit in (1024, 20):
        q30 = hot.parse_hot_query(
            {"series": "writes", "from": str(kit.T0 + 1), "to": str(end), "limit": str(limit)},
            now_ms=end,
        )
        assert q30.tier == TIER_1H, q30.tier
        size = answer(q30)
        ms = kit.median_ms(partial(answer, q30), repeat)
        print(
            f"from/to 30 d, {rows} rows x {hours} columns (tier 2), limit {limit}: "
            f"median {ms:.1f} ms (CPU {kit.CPU[-1]:.1f} ms), JSON {size / 1024:.1f} KiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    kit.setup_django(Path(tempfile.mkdtemp(prefix="ekv-bench-keyviz-hot-data.")))
    run(args.rows, args.repeat)


if __name__ == "__main__":
    main()
