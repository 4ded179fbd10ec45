"""200 concurrent live viewers on one daphne process: delivery latency and node load.

One `elastickv-admin serve` process (daphne, in-memory channel layer), a 3-node
devcluster flushing 1 s columns on its own timers with a steady workload (in a child
process), and 200 WebSocket clients (autobahn's asyncio client, installed with daphne)
that subscribe to writes and acknowledge every column, as the page does.

Printed, for polling (upstream nodes) and StreamEvents (design nodes):
- delivery latency: column broadcast by the poller -> received by a viewer, p50/p99/max
  over every (viewer, column), plus boundary -> received for context (that includes
  waiting for the last node's flush, up to half a step by design);
- completeness: every viewer got every column, and no resync happened;
- node RPCs per step: GetKeyVizMatrix calls per node per column, and streams opened.

    .venv/bin/python benchmarks/bench_keyviz_viewers.py [--viewers 200] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autobahn.asyncio.websocket import (  # noqa: E402
    WebSocketClientFactory,
    WebSocketClientProtocol,
)

from devcluster import DevCluster  # noqa: E402
from tests.conftest import start_portal  # noqa: E402

TOKEN = "bench-token"  # noqa: S105
STEP_MS = 1_000


def serve_nodes(profile: str) -> None:
    """Child process: a timed devcluster; stdin commands `reset` and `counts`."""
    with DevCluster(
        nodes=3,
        routes=64,
        profile=profile,
        step_ms=STEP_MS,
        token=TOKEN,
        timers=True,
        workload_rate=2_000,
        seed=7,
    ) as cluster:
        print(json.dumps({"addresses": cluster.addresses}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                cluster.reset_rpc_counts()
                print(json.dumps({"ok": True}), flush=True)
            elif command == "counts":
                counts = {n.node_id: cluster.rpc_counts(n.node_id) for n in cluster.nodes}
                streams = {n.node_id: cluster.subscriber_count(n.node_id) for n in cluster.nodes}
                print(json.dumps({"counts": counts, "streams": streams}), flush=True)
            else:
                break


class Nodes:
    def __init__(self, profile: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", profile],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addresses: list[str] = self.ask(None)["addresses"]

    def ask(self, command: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Board:
    """What every viewer received."""

    def __init__(self) -> None:
        self.columns: dict[int, list[tuple[int, float, int]]] = defaultdict(
            list
        )  # t -> (viewer, recv, emitted)
        self.bytes: list[int] = []
        self.rows: list[int] = []
        self.resyncs = 0
        self.subscribed = 0
        self.viewers = 0
        self.all_subscribed = asyncio.Event()
        self.errors: list[str] = []


class Viewer(WebSocketClientProtocol):
    board: Board
    number: int

    def send(self, message: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(message).encode())  # type: ignore[no-untyped-call]

    def onOpen(self) -> None:
        self.send({"type": "subscribe", "series": "writes"})

    def onMessage(self, payload: bytes, is_binary: bool) -> None:
        received = time.time() * 1000
        message = json.loads(payload)
        kind = message["type"]
        if kind == "column":
            at = message["column_unix_ms"]
            self.board.columns[at].append((self.number, received, message["emitted_unix_ms"]))
            self.board.bytes.append(len(payload))
            self.board.rows.append(len(message["rows"]))
            self.send({"type": "ack", "column_unix_ms": at})
        elif kind == "subscribed":
            self.board.subscribed += 1
            if self.board.subscribed == self.board.viewers:
                self.board.all_subscribed.set()
        elif kind == "resync":
            self.board.resyncs += 1
        elif kind == "error":
            self.board.errors.append(message["message"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def connect_viewers(
    url: str, token: str, board: Board, count: int
) -> list[asyncio.BaseTransport]:
    """`count` WebSocket viewers of the portal at `url`, signed in with an API token."""
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    for i in range(count):
        factory = WebSocketClientFactory(  # type: ignore[no-untyped-call]
            f"ws://{host}:{port}/api/stream",
            origin=url,
            headers={"Authorization": f"Bearer {token}"},
        )

        def build(number: int = i, factory: WebSocketClientFactory = factory) -> Viewer:
            protocol = Viewer()
            protocol.factory = factory  # type: ignore[attr-defined]
            protocol.board = board
            protocol.number = number
            return protocol

        transport, _ = await loop.create_connection(build, host, int(port))
        transports.append(transport)
    return transports


async def measure(url: str, token: str, viewers: int, steps: int, nodes: Nodes) -> None:
    board = Board()
    board.viewers = viewers
    started = time.perf_counter()
    transports = await connect_viewers(url, token, board, viewers)
    await board.all_subscribed.wait()
    connect_s = time.perf_counter() - started
    # Warm up until every viewer has live columns, then measure from a clean count.
    while True:
        await asyncio.sleep(0.2)
        recent = [t for t, got in board.columns.items() if len(got) == viewers]
        if len(recent) >= 2:
            break
    nodes.ask("reset")
    first = max(board.columns) + STEP_MS
    await asyncio.sleep(steps * STEP_MS / 1000 + 0.3)
    counts = nodes.ask("counts")
    last = first + (steps - 1) * STEP_MS
    window = [t for t in board.columns if first <= t <= last]
    delivery: list[float] = []
    since_boundary: list[float] = []
    complete = 0
    for t in window:
        got = board.columns[t]
        complete += len({v for v, _, _ in got}) == viewers
        for _, received, emitted in got:
            delivery.append(received - emitted)
            since_boundary.append(received - t)
    per_node = {
        node: c.get("GetKeyVizMatrix", 0) / max(1, len(window))
        for node, c in counts["counts"].items()
    }
    opened = {node: c.get("StreamEvents", 0) for node, c in counts["counts"].items()}
    print(f"  {viewers} viewers connected and subscribed in {connect_s:.1f} s")
    print(
        f"  {len(window)} columns measured, {len(delivery)} deliveries; "
        f"{complete} of {len(window)} columns reached every viewer; resyncs {board.resyncs}; "
        f"errors {len(board.errors)}"
    )
    print(
        f"  per column: {statistics.mean(board.rows):.0f} rows, "
        f"{statistics.mean(board.bytes) / 1024:.1f} KiB per message"
    )
    print(
        f"  delivery (broadcast -> viewer)   p50 {pct(delivery, 0.5):6.1f} ms   "
        f"p99 {pct(delivery, 0.99):6.1f} ms   max {max(delivery):6.1f} ms"
    )
    print(
        f"  boundary -> viewer (context)     p50 {pct(since_boundary, 0.5):6.1f} ms   "
        f"p99 {pct(since_boundary, 0.99):6.1f} ms"
    )
    print(
        "  node RPCs per step: GetKeyVizMatrix "
        + ", ".join(f"{n} {v:.2f}" for n, v in sorted(per_node.items()))
        + f"; StreamEvents opened during the window {sum(opened.values())}; "
        f"open streams per node {sorted(set(counts['streams'].values()))}"
    )
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.2)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve_nodes(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdef0123456789")
    print(
        f"{args.viewers} viewers on one daphne process, 3 nodes, {STEP_MS} ms steps, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text(TOKEN)
        for profile, label in (
            ("upstream", "polling (upstream nodes)"),
            ("design", "StreamEvents (design nodes)"),
        ):
            print(f"== {label}")
            nodes = Nodes(profile)
            data = Path(tmp) / profile
            data.mkdir()
            portal = start_portal(
                data, ["--nodes", ",".join(nodes.addresses), "--nodeTokenFile", str(token)]
            )
            try:
                time.sleep(3.5 * STEP_MS / 1000)  # a few columns of history
                api_token = portal.manage("create_api_token", portal.admin_username).strip()
                asyncio.run(measure(portal.url, api_token, args.viewers, args.steps, nodes))
            finally:
                portal.stop()
                nodes.close()


if __name__ == "__main__":
    main()
