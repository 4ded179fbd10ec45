"""devcluster KeyViz sampler cost: printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_devcluster_sampler.py [--routes N] [--ops N] [--repeat N]

With 10,000 tracked routes (default) it measures:
- observe: one `KeyVizSampler.observe` call per operation, as a real node's request path
  would make it (random routes, 30% writes);
- batch path: `ClusterSim.apply` on generated ticks (100 ms of workload at 10,000 ops/s,
  about 2,500 operations with bursts), which routes, picks recorders and aggregates with
  numpy before observing; the cost divided by the operations; once over the 10,000 routes
  and once over the demo's 8;
- flush: closing a window in which every tracked route saw traffic (the worst case) and one
  in which 1% did;
- set_routes: re-deriving buckets after a catalog change;
- matrix: a GetKeyVizMatrixResponse of all routes over 60 columns, capped at 1024 rows;
- day matrix: GetKeyVizMatrix's node-side work (`matrix_wire` and encoding) for a day of
  1440 columns with traffic on every one of 1024 routes: the first query (which builds
  the sampler's cached matrix), a repeat, and one after one more flush (a polling page).

Figures are the best of --repeat runs (default 3).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from devcluster.catalog import Route
from devcluster.ops import OpBatch
from devcluster.sampler import KeyVizSampler
from devcluster.simulation import ClusterSim
from devcluster.workload import WorkloadGenerator
from proto import admin_pb2
from proto.wire import encode_keyviz_matrix


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, {platform.system()}"
    )
    print(f"inputs: {args.routes} tracked routes, 3 groups, {args.ops} ops, best of {args.repeat}")

    sim = ClusterSim(nodes=3, groups=3, routes=args.routes, max_tracked_routes=args.routes)
    routes: tuple[Route, ...] = sim.catalog.routes
    sampler = sim.nodes["n1"].sampler
    terms = {g.group_id: g.term for g in sim.groups.values()}
    route_ids = [routes[i].route_id for i in rng.integers(0, len(routes), args.ops).tolist()]
    is_write = (rng.random(args.ops) < 0.3).astype(int).tolist()
    nbytes = rng.integers(16, 4096, args.ops).tolist()
    observe = sampler.observe

    def observe_all() -> None:
        for route_id, w, b in zip(route_ids, is_write, nbytes, strict=True):
            observe(route_id, w, 1, b)

    seconds = best_of(args.repeat, observe_all)
    print(f"observe        {seconds / args.ops * 1e9:8.0f} ns/op   ({args.ops} single-op calls)")
    sampler.flush(1, terms)

    def apply_all(cluster: ClusterSim, batches: list[OpBatch]) -> None:
        for batch in batches:
            cluster.apply(batch, strict=False)

    for cluster, label in ((sim, f"{args.routes} routes"), (ClusterSim(), "8 routes, the demo")):
        generator = WorkloadGenerator(cluster.keyspace, 10_000, 60.0, args.seed)
        live = cluster.live_indices()
        batches = [generator.batch(0.1 * (i + 1), 0.1, cluster.catalog, live) for i in range(200)]
        ops = sum(b.size for b in batches)
        seconds = best_of(args.repeat, partial(apply_all, cluster, batches))
        print(
            f"batch path     {seconds / ops * 1e9:8.0f} ns/op   "
            f"({len(batches)} ticks, {ops} ops, {label}: routed and recorded on 3 nodes)"
        )

    at = [1_000]

    def fill_and_flush(share: float) -> float:
        active = routes[: max(1, int(len(routes) * share))]
        best = float("inf")
        for _ in range(args.repeat):
            for route in active:
                observe(route.route_id, 0, 3, 300)
                observe(route.route_id, 1, 1, 100)
            at[0] += 1_000
            started = time.perf_counter()
            sampler.flush(at[0], terms)
            best = min(best, time.perf_counter() - started)
        return best

    full = fill_and_flush(1.0)
    print(f"flush          {full * 1e3:8.2f} ms      (all {len(routes)} routes saw traffic)")
    sparse = fill_and_flush(0.01)
    print(f"flush          {sparse * 1e3:8.2f} ms      (1% of routes saw traffic)")

    seconds = best_of(args.repeat, lambda: sampler.set_routes(routes))
    print(f"set_routes     {seconds * 1e3:8.2f} ms      (bucket map for {len(routes)} routes)")

    for _ in range(60 - len(sampler.columns)):
        for route in routes:
            observe(route.route_id, 1, 1, 100)
        at[0] += 1_000
        sampler.flush(at[0], terms)
    columns = len(sampler.columns)
    seconds = best_of(
        args.repeat, lambda: sampler.matrix(admin_pb2.KEYVIZ_SERIES_WRITES, 0, 0, 1024)
    )
    print(
        f"matrix         {seconds * 1e3:8.2f} ms      "
        f"({len(routes)} rows x {columns} columns, capped at 1024)"
    )
    day_matrix(routes[:1024], terms)


def day_matrix(routes: tuple[Route, ...], terms: dict[int, int]) -> None:
    sampler = KeyVizSampler(history_columns=1440, max_tracked_routes=len(routes))
    sampler.set_routes(routes)

    def column(at_ms: int) -> None:
        for route in routes:
            sampler.observe(route.route_id, 1, 1 + route.route_id % 5, 64)
        sampler.flush(at_ms, terms)

    for c in range(1440):
        column(60_000 * (c + 1))

    def answer() -> float:
        started = time.perf_counter()
        encode_keyviz_matrix(sampler.matrix_wire(admin_pb2.KEYVIZ_SERIES_WRITES, 0, 0, 1024))
        return time.perf_counter() - started

    first = answer()
    again = answer()
    column(60_000 * 1441)
    polled = answer()
    print(
        f"day matrix     {first * 1e3:8.2f} ms      first query, then {again * 1e3:.2f} ms, and "
        f"{polled * 1e3:.2f} ms after a flush ({len(routes)} rows x 1440 columns, encoded)"
    )


if __name__ == "__main__":
    main()
