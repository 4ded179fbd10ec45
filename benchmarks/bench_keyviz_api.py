"""The cost of fetching full KeyViz matrices from a devcluster: the collector's backfill.

Page loads and GET /api/keyviz/matrix no longer ask the nodes (they read the store:
benchmarks/bench_keyviz_serve.py); the collector still fetches each node's ring
when it starts, with the same node client and decoder. Sizes from issue 5:
3 nodes x 1024 rows x 1440 columns and 5 nodes x 1024 x 4096. Every node sees
traffic on every route in every column (writes entered on every node, as
upstream nodes count them), so each node answers a full matrix.

The nodes run in a child process (as real nodes run on other machines), so the
portal's own work and the nodes' work do not share one interpreter lock.
Printed per size: the raw fan-out (node-side time included) and the decoding of
the fetched bytes both ways (protobuf's ParseFromString then numpy, and
proto/wire.py straight to numpy, which the collector uses), as median and max
over several requests.

    .venv/bin/python benchmarks/bench_keyviz_api.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.test import override_settings  # noqa: E402

from cluster.fanout import fan_out  # noqa: E402
from cluster.runtime import discovery, node_client, reset_runtime  # noqa: E402
from devcluster import DevCluster  # noqa: E402
from devcluster.ops import OpBatch  # noqa: E402
from elastickv_admin.lib.config import PortalConfig  # noqa: E402
from keyviz.matrix import node_matrix_from_bytes, node_matrix_from_response  # noqa: E402
from proto import admin_pb2  # noqa: E402

STEP = 60_000
TOKEN = "bench-token"  # noqa: S105


def fill(cluster: DevCluster, routes: int, columns: int, seed: int = 1) -> int:
    """`columns` columns of traffic on every route, entered on every node."""
    rng = np.random.default_rng(seed)
    n_nodes = len(cluster.nodes)
    route_pos = np.tile(np.arange(routes, dtype=np.int64), n_nodes)
    entry = np.repeat(np.arange(n_nodes, dtype=np.int64), routes)
    size = route_pos.size
    first = (int(time.time() * 1000) // STEP - columns) * STEP
    for c in range(columns):
        # A few writes per route, more on a drifting hot range.
        hot = (route_pos - (c * routes) // columns) % routes < routes // 16
        repeats = rng.integers(1, 4, size) + hot * 20
        batch = OpBatch(
            route_pos=np.repeat(route_pos, repeats),
            is_write=np.ones(int(repeats.sum()), dtype=np.bool_),
            nbytes=np.full(int(repeats.sum()), 64, dtype=np.int64),
            entry=np.repeat(entry, repeats),
            follower_local=np.zeros(int(repeats.sum()), dtype=np.bool_),
            adapter=np.zeros(int(repeats.sum()), dtype=np.int64),
            latency_ns=np.full(int(repeats.sum()), 1_000_000, dtype=np.int64),
        )
        cluster.inject_batch(batch)
        cluster.flush(at_ms=first + c * STEP)
    return first


def report(label: str, seconds: list[float]) -> None:
    median, worst = statistics.median(seconds) * 1000, max(seconds) * 1000
    print(f"  {label:58} median {median:8.1f} ms   max {worst:8.1f} ms")


async def measure(
    addresses: list[str], token_file: str, first: int, columns: int, runs: int
) -> None:
    config = PortalConfig(seeds=tuple(addresses), node_token_file=token_file, rpc_timeout_s=30.0)
    with override_settings(ELASTICKV_ADMIN=config, ALLOWED_HOSTS=["testserver"]):
        reset_runtime()
        nodes = await discovery().nodes()
        request = admin_pb2.GetKeyVizMatrixRequest(
            series=admin_pb2.KEYVIZ_SERIES_WRITES,
            from_unix_ms=first,
            to_unix_ms=first + columns * STEP,
            rows=1024,
        )
        raw_times = []
        for _ in range(runs):
            t = time.perf_counter()
            answers = await fan_out(node_client(), nodes, "GetKeyVizMatrix", request, raw=True)
            raw_times.append(time.perf_counter() - t)
        size_mb = sum(len(b) for b in answers.results.values()) / 1e6
        wire = answers.results
        protobuf_times, wire_times = [], []
        for _ in range(runs):
            t = time.perf_counter()
            for address, data in wire.items():
                parsed = admin_pb2.GetKeyVizMatrixResponse.FromString(data)
                node_matrix_from_response(address, parsed)
            protobuf_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            for address, data in wire.items():
                node_matrix_from_bytes(address, data)
            wire_times.append(time.perf_counter() - t)
        report(f"fan-out (raw bytes, {size_mb:.1f} MB, node-side time included)", raw_times)
        report("decode: protobuf ParseFromString + to numpy (all nodes)", protobuf_times)
        report("decode: proto/wire.py to numpy (all nodes, collector path)", wire_times)
        await node_client().close()


def serve_nodes(n_nodes: int, routes: int, columns: int) -> None:
    """Child process: fill a devcluster, print its addresses, serve until stdin closes."""
    with DevCluster(
        nodes=n_nodes,
        routes=routes,
        history_columns=columns,
        token=TOKEN,
        timers=False,
        max_tracked_routes=routes,
    ) as cluster:
        t = time.perf_counter()
        first = fill(cluster, routes, columns)
        print(
            json.dumps(
                {"addresses": cluster.addresses, "first": first, "fill_s": time.perf_counter() - t}
            ),
            flush=True,
        )
        sys.stdin.read()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve_nodes(*(int(a) for a in sys.argv[2:5]))
        return
    quick = "--quick" in sys.argv
    sizes = [(3, 1024, 1440), (5, 1024, 4096)] if not quick else [(3, 256, 120)]
    runs = 5 if not quick else 2
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        token_file.write_text(TOKEN)
        for n_nodes, routes, columns in sizes:
            print(f"== {n_nodes} nodes x {routes} rows x {columns} columns ({runs} requests each)")
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(n_nodes), str(routes), str(columns)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            assert child.stdin is not None
            ready = json.loads(child.stdout.readline())
            print(f"  (filled the nodes in {ready['fill_s']:.1f} s, in a child process)")
            try:
                asyncio.run(
                    measure(ready["addresses"], str(token_file), ready["first"], columns, runs)
                )
            finally:
                child.stdin.close()
                child.wait(timeout=30)


if __name__ == "__main__":
    main()
