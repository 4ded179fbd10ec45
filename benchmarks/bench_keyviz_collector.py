"""KeyViz collector benchmark: CPU per step and memory at 20 and 100 nodes; printed, not a test.

    .venv/bin/python benchmarks/bench_keyviz_collector.py [--nodes 20,100] [--rows 300] [--steps 20]

The collector's whole per-step path after the node answers, in process: every
node's new column of each of the four series (fake node matrices, already
decoded, `--rows` non-zero rows of 1024 buckets each, phases spread over the
step and 0-280 ms late) goes through the real phase lock (slots), the store
(save_node_columns, SQLite in WAL as in production), the ledger (finality), the
slot merge (unknown cells, sums), save_merged and the channel-layer message
(column_event, published to the in-memory layer). Node RPCs and protobuf
decoding are not in it (bench_keyviz_api.py measures the fetch and decode).

Printed per node count: input cells per step, the CPU time per step (median,
p90) split into "take" (slots + raw store) and "finalize" (merge + merged store
+ publish), the wall time, and the process RSS after the run. Then a start-up
backfill (`--backfill-nodes` nodes' whole 24 h rings at once): its CPU and wall
time, and the longest the event loop went without running (a ticker every 10 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_keyviz_store import fresh_database, setup_django  # noqa: E402

if TYPE_CHECKING:
    from keyviz.columns import NodeColumn
    from keyviz.matrix import RowMeta

STEP = 60_000
BUCKETS = 1024
SERIES = (1, 2, 3, 4)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def catalog(n: int, row: type[RowMeta]) -> list[RowMeta]:
    return [
        row(
            f"route:{i}",
            start=f"user:{i:05d}".encode(),
            end=f"user:{i + 1:05d}".encode(),
            route_ids=(i,),
            route_count=1,
        )
        for i in range(n)
    ]


def node_column(
    rng: np.random.Generator, rows: list[RowMeta], node: str, at: int, active: int
) -> NodeColumn:
    from keyviz.columns import NodeColumn

    pick = np.sort(rng.choice(len(rows), size=active, replace=False))
    return NodeColumn(
        node=node,
        column_unix_ms=at,
        rows=tuple(rows[i] for i in pick.tolist()),
        values=rng.integers(1, 5_000, size=active, dtype=np.uint64),
        soft=rng.random(active) < 0.01,
        raft_group_ids=(pick % 8 + 1).astype(np.uint64),
        leader_terms=np.full(active, 3, dtype=np.uint64),
    )


async def run(
    nodes: int, active: int, steps: int, warmup: int, *, backfill: int = 0
) -> dict[str, float]:
    """`backfill` > 0: one step taking `backfill` columns per node (a whole ring) instead."""
    from channels.layers import InMemoryChannelLayer

    from cluster.fanout import Node
    from keyviz.align import PhaseLock
    from keyviz.collector import Collector
    from keyviz.feeds import PollSchedule
    from keyviz.finalize import SeriesLedger
    from keyviz.intake import Fetched, NodeTrack
    from keyviz.lease import LocalLease
    from keyviz.matrix import RowMeta

    rng = np.random.default_rng(7)
    rows = catalog(BUCKETS, RowMeta)
    collector = Collector(layer=InMemoryChannelLayer(), lease=LocalLease(), step_ms=STEP)
    collector.step_ms = STEP
    intake = collector.nodes
    intake.lock = PhaseLock(STEP)
    intake.schedule = PollSchedule(STEP)
    names = [f"n{i:03d}" for i in range(nodes)]
    tracks = []
    for i, name in enumerate(names):
        track = NodeTrack(Node(name, f"10.0.{i // 250}.{i % 250}:50051"))
        intake.tracks[track.node.address] = track
        tracks.append(track)
    intake.leaders.update({g: names[g % nodes] for g in range(1, 9)}, taken_at_ms=1)
    collector._ledgers = {s: SeriesLedger(STEP) for s in SERIES}
    collector._pending = {s: {} for s in SERIES}
    phases = rng.integers(0, STEP, size=nodes)
    base = (time.time_ns() // 1_000_000 // STEP - steps - warmup - 2) * STEP
    take_cpu, final_cpu, wall = [], [], []
    stall = [0.0]

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            stall[0] = max(stall[0], now - last - 0.01)
            last = now

    if backfill:
        steps, warmup = 1, 0
        base -= backfill * STEP
    for k in range(steps + warmup):
        fetched: Fetched = []
        for track, phase in zip(tracks, phases.tolist(), strict=True):
            # One flush time per column, shared by the four series (as on a node).
            at = [
                base + (k + j) * STEP + phase + int(rng.integers(0, 280))
                for j in range(max(1, backfill))
            ]
            for s in SERIES:
                cols = [node_column(rng, rows, track.label, t, active) for t in at]
                fetched.append((track, s, cols))
        watch = asyncio.get_running_loop().create_task(ticker())
        t0, c0 = time.perf_counter(), time.process_time()
        await collector._take(fetched)
        c1 = time.process_time()
        await collector._finalize()
        c2, t2 = time.process_time(), time.perf_counter()
        watch.cancel()
        if k >= warmup:
            take_cpu.append(c1 - c0)
            final_cpu.append(c2 - c1)
            wall.append(t2 - t0)
    published = collector.out.published
    from keyviz.models import StoredColumn, StoredNodeColumn

    stored = await collector.history.run(StoredColumn.objects.filter(tier=0).count)
    raw = await collector.history.run(StoredNodeColumn.objects.count)
    await collector.history.close()
    total = [a + b for a, b in zip(take_cpu, final_cpu, strict=True)]
    return {
        "cells": nodes * len(SERIES) * active,
        "cpu_med": statistics.median(total),
        "cpu_p90": sorted(total)[int(0.9 * (len(total) - 1))],
        "take_med": statistics.median(take_cpu),
        "final_med": statistics.median(final_cpu),
        "wall_med": statistics.median(wall),
        "published": published,
        "rss_mb": rss_mb(),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stall_ms": stall[0] * 1000,
        "stored": stored,
        "raw": raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="20,100")
    parser.add_argument("--rows", type=int, default=300, help="non-zero rows per node column")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backfill-nodes", type=int, default=3)
    parser.add_argument("--ring", type=int, default=1440, help="columns per node to backfill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    setup_django(work)
    print(f"python {platform.python_version()}, {platform.machine()}, SQLite (WAL), step 60 s")
    print(
        f"input per step: each node's column for 4 series, {args.rows} non-zero rows of "
        f"{BUCKETS} buckets each; {args.steps} steps measured after {args.warmup} warm-up"
    )
    for n in [int(x) for x in args.nodes.split(",")]:
        fresh_database(work / f"collector-{n}.sqlite3")
        r = asyncio.run(run(n, args.rows, args.steps, args.warmup))
        print(
            f"{n:4d} nodes: {r['cells']:7,d} node cells/step -> CPU/step median "
            f"{r['cpu_med'] * 1000:7.1f} ms (p90 {r['cpu_p90'] * 1000:7.1f}; take+raw store "
            f"{r['take_med'] * 1000:6.1f}, finalize+merged store+publish "
            f"{r['final_med'] * 1000:6.1f}), wall {r['wall_med'] * 1000:7.1f} ms; "
            f"{r['published']} columns published; RSS {r['rss_mb']:.0f} MB "
            f"(peak {r['maxrss_mb']:.0f} MB)"
        )
    if args.backfill_nodes:
        n = args.backfill_nodes
        fresh_database(work / "collector-backfill.sqlite3")
        r = asyncio.run(run(n, args.rows, 1, 0, backfill=args.ring))
        print(
            f"backfill of {n} nodes x {args.ring} columns x 4 series ({r['cells'] * args.ring:,d} "
            f"node cells): CPU {r['cpu_med']:.1f} s, wall {r['wall_med']:.1f} s, "
            f"{r['stored']} merged and {r['raw']} node columns stored, {r['published']} "
            f"published (the newest 120 per series), longest event "
            f"loop stall {r['stall_ms']:.0f} ms; RSS {r['rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
