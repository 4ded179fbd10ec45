"""Overview API benchmark: printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_cluster_overview.py [--requests N] [--concurrency C]

For a 3-node and a 50-node cluster it starts `python -m devcluster` in its own process
(one real gRPC server per node on loopback, so the nodes do not share the portal's GIL),
points the portal's settings at it and times `GET /api/cluster/overview` through the
Django ASGI handler in this process: URL routing, middleware, the view, membership
(cached for the refresh interval), the GetRaftGroups fan-out to every node, ListRoutes
from one node, the support probes (cached a minute per node) and JSON serialization.
HTTP parsing by daphne is not included.

Each scenario prints the first (cold) request, then p50/p99 of --requests sequential
requests, then p50/p99 per request with --concurrency requests in flight at a time.
The 50-node cluster is simulated: 50 gRPC servers on one machine answering from one
shared simulated cluster, so the figures include their CPU on the same host.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "benchmark-node-token"  # noqa: S105 - a throwaway loopback cluster


@dataclass(frozen=True)
class Scenario:
    nodes: int
    groups: int
    routes: int


SCENARIOS = (Scenario(3, 3, 8), Scenario(50, 16, 64))


@contextmanager
def devcluster(sc: Scenario, token_file: Path) -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devcluster",
            "--nodes",
            str(sc.nodes),
            "--groups",
            str(sc.groups),
            "--routes",
            str(sc.routes),
            "--token-file",
            str(token_file),
            "--profile",
            "design",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    addresses: list[str] = []
    try:
        while len(addresses) < sc.nodes:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"devcluster exited with {proc.wait()}")
            found = re.match(r"node \S+ (\S+)", line)
            if found:
                addresses.append(found.group(1))
        yield addresses
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def line(label: str, samples_ms: list[float]) -> str:
    return (
        f"  {label:<28} n={len(samples_ms):<5} p50 {percentile(samples_ms, 50):7.2f} ms"
        f"   p99 {percentile(samples_ms, 99):7.2f} ms   mean {statistics.fmean(samples_ms):7.2f} ms"
    )


async def measure(seeds: list[str], token_file: Path, requests: int, concurrency: int) -> None:
    from django.test import override_settings

    from benchmarks.signed_in import viewer_client
    from cluster.runtime import node_client, reset_runtime
    from elastickv_admin.lib.config import PortalConfig

    config = PortalConfig(seeds=tuple(seeds[:3]), node_token_file=str(token_file))
    with override_settings(ELASTICKV_ADMIN=config, ALLOWED_HOSTS=["testserver"]):
        reset_runtime()
        client = await viewer_client()

        async def one() -> float:
            started = time.perf_counter()
            response = await client.get("/api/cluster/overview")
            elapsed = (time.perf_counter() - started) * 1000
            body = response.json()
            if response.status_code != 200 or body["nodes_responded"] != len(seeds):
                raise RuntimeError(f"unexpected answer: {response.status_code} {body}")
            return elapsed

        cold = await one()
        print(f"  {'first request (cold)':<28} {cold:7.2f} ms")
        sequential = [await one() for _ in range(requests)]
        print(line("sequential", sequential))

        concurrent: list[float] = []
        for _ in range(max(1, requests // concurrency)):
            concurrent += await asyncio.gather(*(one() for _ in range(concurrency)))
        print(line(f"{concurrency} concurrent", concurrent))
        await node_client().close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ekv-bench-"))
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no connection chatter in the figures
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["ELASTICKV_ADMIN_DATA_DIR"] = str(data_dir)
    import django

    django.setup()

    token_file = data_dir / "node-token"
    token_file.write_text(TOKEN)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print("GET /api/cluster/overview, in-process through Django's ASGI handler")
    for sc in SCENARIOS:
        with devcluster(sc, token_file) as seeds:
            kind = "simulated " if sc.nodes > 3 else ""
            print(f"\n{sc.nodes}-node {kind}cluster ({sc.groups} Raft groups, {sc.routes} routes)")
            asyncio.run(measure(seeds, token_file, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
