"""The devcluster as a running thing: timers, ports, threads, asyncio clients, the CLI."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from devcluster import ClusterError, DevCluster, FlushJitter
from devcluster.pytest_plugin import StubsFactory, matrix
from proto import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
OVERVIEW = admin_pb2.GetClusterOverviewRequest()


def _columns(cluster: DevCluster, stubs: StubsFactory, node_id: str) -> tuple[list[int], Any]:
    response = matrix(cluster, stubs, node_id)
    return list(response.column_unix_ms), response.rows


def test_three_nodes_start_fast_and_leave_no_thread_or_port_behind():
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    cluster = DevCluster(3, token="t", workload_rate=500, step_ms=100, events_interval_s=0.05)
    try:
        cluster.start()
        startup_s = time.monotonic() - started
        ports = [int(n.address.rsplit(":", 1)[1]) for n in cluster.nodes]
        time.sleep(0.3)  # let timers, workload and events run
    finally:
        cluster.stop()

    assert startup_s < 0.5
    assert set(threading.enumerate()) == threads_before
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free again


def test_timers_flush_every_step_on_each_nodes_own_phase(devcluster_factory, devcluster_stubs):
    step = 200
    # No jitter: the first columns show the phases themselves.
    cluster = devcluster_factory(
        timers=True, step_ms=step, workload_rate=1_000, seed=0, flush_jitter=FlushJitter()
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        columns = {n.node_id: _columns(cluster, devcluster_stubs, n.node_id) for n in cluster.nodes}
        if all(len(c) >= 3 for c, _ in columns.values()):
            break
        time.sleep(0.05)

    firsts = []
    for node_id, (stamps, rows) in columns.items():
        assert len(stamps) >= 3, node_id
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(step // 2 <= g <= 2 * step for g in gaps), (node_id, gaps)
        assert rows, node_id  # the workload reached every node
        firsts.append(stamps[0])
    # Seed 0 puts the three flush phases at least 46 ms apart (of 200).
    offsets = sorted((t - firsts[0]) % step for t in firsts)
    assert all(b - a >= 20 for a, b in itertools.pairwise([*offsets, offsets[0] + step]))


def test_restarted_node_flushes_on_its_new_boot_timer(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(timers=True, step_ms=100)
    cluster.stop_node("n2")
    cluster.start_node("n2")
    deadline = time.monotonic() + 5
    while len(_columns(cluster, devcluster_stubs, "n2")[0]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)

    stamps, _ = _columns(cluster, devcluster_stubs, "n2")

    assert len(stamps) >= 2
    assert 50 <= stamps[1] - stamps[0] <= 200


def test_base_port_puts_node_i_on_base_plus_i(devcluster_factory):
    for _ in range(20):
        base = random.randint(20_000, 60_000)
        try:
            cluster = devcluster_factory(base_port=base)
        except ClusterError:
            continue  # someone holds one of the three ports; try elsewhere
        assert cluster.addresses == [f"127.0.0.1:{base + i}" for i in range(3)]
        return
    pytest.fail("found no three consecutive free ports")


def _taken_port_after_a_free_one() -> socket.socket:
    """A listening socket whose port's predecessor is free (the OS may hand out any port)."""
    for _ in range(50):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port - 1))
        except OSError:
            taken.close()
            continue
        return taken
    pytest.fail("found no free port just below a taken one")


def test_a_taken_port_fails_loudly_and_releases_the_others(devcluster_factory):
    with _taken_port_after_a_free_one() as taken:
        port = taken.getsockname()[1]  # n1's port (port - 1) is free, n2's is taken

        with pytest.raises(ClusterError, match=f"cannot listen on 127.0.0.1:{port}"):
            devcluster_factory(base_port=port - 1)

        with socket.socket() as s:
            s.bind(("127.0.0.1", port - 1))  # n1's port was released again


async def test_asyncio_clients_work_beside_the_sync_cluster(devcluster_design):
    cluster = devcluster_design
    async with grpc.aio.insecure_channel(cluster.nodes[0].address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        stream = admin.StreamEvents(
            admin_pb2.StreamEventsRequest(), metadata=cluster.auth_metadata(), timeout=10
        )
        await stream.initial_metadata()
        overview = await admin.GetClusterOverview(OVERVIEW, metadata=cluster.auth_metadata())

        cluster.flush("n1", at_ms=1_000)  # a sync call from inside the event loop

        event = await stream.read()
        stream.cancel()
    assert overview.self.node_id == "n1"
    assert event.keyviz_column.column_unix_ms == 1_000


def _run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devcluster", "--base-port", "0", "--log-level", "WARNING", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stderr(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    return proc.stderr.read()


def _read_node_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(count)]
    for line in lines:
        assert re.fullmatch(r"node n\d+ 127\.0\.0\.1:\d+", line), (line, _stderr(proc))
    return [line.split()[2] for line in lines]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_one_line_per_node_and_exits_cleanly_on_signal(sig, devcluster_stubs):
    proc = _run_cli("--nodes", "2", "--adminInsecureNoAuth", "--step", "500ms", "--rate", "100")
    try:
        addresses = _read_node_lines(proc, 2)
        overview = devcluster_stubs(addresses[1]).admin.GetClusterOverview(OVERVIEW, timeout=5)
        assert [overview.self.node_id, *[m.node_id for m in overview.members]] == ["n2", "n1"]
    finally:
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0


def test_cli_token_file_gates_admin_and_is_reread(tmp_path, devcluster_stubs):
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n", encoding="utf-8")
    proc = _run_cli("--nodes", "1", "--token-file", str(token_file), "--rate", "0")
    try:
        (address,) = _read_node_lines(proc, 1)
        admin = devcluster_stubs(address).admin
        with pytest.raises(grpc.RpcError) as err:
            admin.GetClusterOverview(OVERVIEW, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        token_file.write_text("rotated-cli-token\n", encoding="utf-8")

        md = (("authorization", "Bearer rotated-cli-token"),)
        assert admin.GetClusterOverview(OVERVIEW, metadata=md, timeout=5).self.node_id == "n1"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_cli_rejects_a_token_file_together_with_insecure(tmp_path):
    proc = _run_cli("--token-file", str(tmp_path / "t"), "--adminInsecureNoAuth")

    assert proc.wait(timeout=10) == 2
    assert "not allowed with argument" in _stderr(proc)


def test_cli_reports_an_empty_token_file_and_exits_1(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("\n", encoding="utf-8")
    proc = _run_cli("--token-file", str(token_file))

    assert proc.wait(timeout=10) == 1
    assert "is empty" in _stderr(proc)
