"""Live viewers on 1 and 2 portal processes sharing Redis: delivery latency and node load.

For each size: `--processes` `elastickv-admin serve` processes on one private
redis-server (started here on a free port in a temporary directory; channel
layer and collector lease) and one SQLite database file shared by the processes
(`DATABASE_URL=sqlite:///...`: it only holds the admin, the API token and the
audit events of the subscriptions), a 3-node devcluster (upstream profile,
polling; 1 s columns on its own timers, steady workload, in a child process),
and `--viewers` WebSocket viewers per process (autobahn's asyncio client, API
token) that subscribe to writes and acknowledge every column.

Printed per size: which process collects (the lease holder), per process the
delivery latency (broadcast by the collecting process -> received by a viewer of
that process) p50/p99/max and completeness, and GetKeyVizMatrix calls per
node per column (one fan-out per step, one call per series, whatever the number
of processes).

The devcluster child, the viewer protocol and the percentiles come from
bench_keyviz_viewers.py.

    .venv/bin/python benchmarks/bench_portal_processes.py [--viewers 100] [--steps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from benchmarks.bench_keyviz_viewers import (  # noqa: E402
    STEP_MS,
    TOKEN,
    Board,
    Nodes,
    connect_viewers,
    pct,
)
from keyviz.lease import COLLECTOR, KEY_PREFIX  # noqa: E402
from tests.conftest import PortalProcess, start_portal  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except Exception:
            time.sleep(0.05)
    client.close()
    return proc, url


async def measure(
    portals: list[PortalProcess], token: str, viewers: int, steps: int, nodes: Nodes, redis_url: str
) -> None:
    boards = [Board() for _ in portals]
    started = time.perf_counter()
    transports: list[asyncio.BaseTransport] = []
    for portal, board in zip(portals, boards, strict=True):
        board.viewers = viewers
        transports += await connect_viewers(portal.url, token, board, viewers)
    await asyncio.gather(*(b.all_subscribed.wait() for b in boards))
    connect_s = time.perf_counter() - started
    # Warm up until every viewer of every process has live columns.
    while True:
        await asyncio.sleep(0.2)
        if all(len([t for t, g in b.columns.items() if len(g) == viewers]) >= 2 for b in boards):
            break
    nodes.ask("reset")
    first = max(max(b.columns) for b in boards) + STEP_MS
    await asyncio.sleep(steps * STEP_MS / 1000 + 0.3)
    counts = nodes.ask("counts")
    last = first + (steps - 1) * STEP_MS
    redis = Redis.from_url(redis_url)
    holder = redis.get(KEY_PREFIX + COLLECTOR)
    redis.close()
    holder_pid = int(holder.decode().split(":")[1]) if isinstance(holder, bytes) else None
    print(
        f"  {viewers * len(portals)} viewers ({viewers} per process) connected and subscribed "
        f"in {connect_s:.1f} s; lease held by process "
        + ", ".join(f"#{i}" for i, p in enumerate(portals) if p.proc.pid == holder_pid)
    )
    for i, board in enumerate(boards):
        window = [t for t in board.columns if first <= t <= last]
        delivery = [r - e for t in window for _, r, e in board.columns[t]]
        complete = sum(len({v for v, _, _ in board.columns[t]}) == viewers for t in window)
        role = "collects" if portals[i].proc.pid == holder_pid else "forwards"
        print(
            f"  process #{i} ({role}): {len(window)} columns, {len(delivery)} deliveries, "
            f"{complete}/{len(window)} complete, resyncs {board.resyncs}, "
            f"errors {len(board.errors)}; {statistics.mean(board.rows):.0f} rows/column"
        )
        print(
            f"    delivery (broadcast -> viewer)  p50 {pct(delivery, 0.5):6.1f} ms   "
            f"p99 {pct(delivery, 0.99):6.1f} ms   max {max(delivery):6.1f} ms"
        )
    columns = len(range(first, last + 1, STEP_MS))
    per_node = {node: c.get("GetKeyVizMatrix", 0) / columns for node, c in counts["counts"].items()}
    print(
        "  node GetKeyVizMatrix calls per column: "
        + ", ".join(f"{n} {v:.2f}" for n, v in sorted(per_node.items()))
    )
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=100, help="viewers per process")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdef0123456789")
    print(
        f"{args.viewers} viewers per portal process, 1 and 2 processes on Redis + one SQLite "
        f"file, 3 nodes (polling), {STEP_MS} ms steps, {args.steps} steps measured, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token_file = work / "node-token"
        token_file.write_text(TOKEN)
        redis_proc, redis_url = start_redis(work)
        try:
            for processes in (1, 2):
                print(f"== {processes} portal process{'es' if processes > 1 else ''}")
                Redis.from_url(redis_url).flushdb()
                nodes = Nodes("upstream")
                env = {
                    "REDIS_URL": redis_url,
                    "DATABASE_URL": f"sqlite:///{work / f'portal-{processes}.sqlite3'}",
                }
                flags = ["--nodes", ",".join(nodes.addresses), "--nodeTokenFile", str(token_file)]
                portals: list[PortalProcess] = []
                try:
                    for i in range(processes):
                        portal = start_portal(
                            work / f"p{processes}-{i}", flags, env, create_admin=i == 0
                        )
                        portals.append(portal)
                    token = portals[0].manage("create_api_token", portals[0].admin_username)
                    time.sleep(3.5 * STEP_MS / 1000)  # a few columns of history
                    asyncio.run(
                        measure(portals, token.strip(), args.viewers, args.steps, nodes, redis_url)
                    )
                finally:
                    for portal in portals:
                        portal.stop()
                    nodes.close()
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
