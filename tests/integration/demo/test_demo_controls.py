"""The demo's failure controls on a real devcluster: each command changes what the nodes
answer as the real failure would; bad commands say what to fix; the local channel
(demo-ctl's Unix socket) is the owner's only."""

from __future__ import annotations

import json
import socket
import stat
import time

import grpc
import pytest

from demo.control import ControlError, ControlServer, DemoControls, send
from devcluster.pytest_plugin import TEST_TOKEN, matrix
from proto import admin_pb2

pytestmark = pytest.mark.integration

OVERVIEW = admin_pb2.GetClusterOverviewRequest()
PORTAL_AUTH = (("authorization", f"Bearer {TEST_TOKEN}"),)


def code_of(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return None


@pytest.fixture
def controls(devcluster_factory) -> DemoControls:
    return DemoControls(devcluster_factory(timers=False, step_ms=2_000))


def overview(controls, devcluster_stubs, node_id: str, timeout: float = 5.0, *, wait=False):
    admin = devcluster_stubs(controls.cluster.node(node_id).address).admin
    return lambda: admin.GetClusterOverview(
        OVERVIEW, metadata=PORTAL_AUTH, timeout=timeout, wait_for_ready=wait
    )


def test_stop_and_start_take_a_node_away_and_back(controls, devcluster_stubs):
    assert controls.run(["stop", "n2"]) == "n2 stopped"
    assert code_of(overview(controls, devcluster_stubs, "n2")) == grpc.StatusCode.UNAVAILABLE
    assert not controls.cluster.node("n2").up
    assert controls.run(["start", "n2"]).startswith("n2 started")
    # (waiting out the channel's reconnect backoff, as a client of a rebooted node does)
    assert code_of(overview(controls, devcluster_stubs, "n2", 30.0, wait=True)) is None


def test_slow_node_misses_a_callers_deadline_until_healed(controls, devcluster_stubs):
    assert controls.run(["slow", "n1", "20"]) == "n1 answers 20 s late"
    call = overview(controls, devcluster_stubs, "n1", timeout=0.3)
    assert code_of(call) == grpc.StatusCode.DEADLINE_EXCEEDED
    controls.run(["heal", "n1"])
    assert code_of(call) is None


def test_wrong_token_is_refused_with_the_portals_token_until_fixed(controls, devcluster_stubs):
    controls.run(["wrong-token", "n3"])
    call = overview(controls, devcluster_stubs, "n3")
    assert code_of(call) == grpc.StatusCode.UNAUTHENTICATED
    controls.run(["fix-token", "n3"])
    assert code_of(call) is None


def test_keyviz_off_makes_the_matrix_unavailable(controls, devcluster_stubs):
    controls.run(["keyviz-off", "n1"])
    cluster = controls.cluster
    assert code_of(lambda: matrix(cluster, devcluster_stubs, "n1")) == grpc.StatusCode.UNAVAILABLE
    assert "keyviz off" in controls.status().splitlines()[0]
    controls.run(["keyviz-on", "n1"])
    assert code_of(lambda: matrix(cluster, devcluster_stubs, "n1")) is None


def test_phase_moves_the_flush_timer(controls):
    assert controls.run(["phase", "n2", "1500"]) == "n2 flushes 1500 ms into each 2000 ms step"
    assert controls.cluster.flush_phase("n2") == 1500


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give a command"),
        (["reboot", "n1"], "unknown command 'reboot'"),
        (["stop"], "stop needs a node: one of n1, n2, n3"),
        (["stop", "n9"], "no node 'n9'; nodes are n1, n2, n3"),
        (["phase", "n1"], "usage: phase NODE MS"),
        (["phase", "n1", "2000"], "phase: MS must be within 0..1999"),
        (["phase", "n1", "soon"], "MS must be a number, got 'soon'"),
        (["slow", "n1", "-1"], "slow: SECONDS must be within (0, 30]"),
        (["stop", "n1", "now"], "usage: stop NODE"),
    ],
)
def test_bad_commands_say_what_to_fix(controls, args, says):
    with pytest.raises(ControlError, match=None) as err:
        controls.run(args)
    assert says in str(err.value)


@pytest.fixture
def channel(controls, tmp_path):
    seen: list[tuple[list[str], str]] = []

    def handler(args: list[str], actor: str) -> str:
        seen.append((args, actor))
        answer: str = controls.run(args)
        return answer

    server = ControlServer(tmp_path / "demo-ctl.sock", handler).start()
    yield server, seen
    server.stop()


def test_demo_ctl_channel_runs_commands_for_the_named_actor(channel, controls):
    server, seen = channel
    assert send(server.path, ["stop", "n2"], actor="demo-ctl:alice") == (True, "n2 stopped")
    assert seen == [(["stop", "n2"], "demo-ctl:alice")]
    assert not controls.cluster.node("n2").up
    ok, message = send(server.path, ["stop", "n7"], actor="demo-ctl:alice")
    assert not ok
    assert message == "no node 'n7'; nodes are n1, n2, n3"


def test_demo_ctl_socket_is_private_to_its_owner(channel):
    server, _ = channel
    mode = server.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json\n", "bad request"),
        (b'{"args": "stop n1"}\n', "args must be a list of strings"),
        (b'{"args": ["stop", 2]}\n', "args must be a list of strings"),
        (b'{"args": ["status"], "actor": 5}\n', "actor must be a string"),
        (b"x" * 5000, "over 4096 bytes"),
    ],
)
def test_demo_ctl_channel_answers_bad_requests_and_keeps_serving(channel, raw, says):
    server, seen = channel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(server.path))
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["ok"] is False
    assert says in reply["message"]
    assert seen == []
    assert send(server.path, ["status"], actor="t")[0] is True


def test_stopped_channel_removes_its_socket(controls, tmp_path):
    path = tmp_path / "demo-ctl.sock"
    server = ControlServer(path, lambda args, actor: "").start()
    server.stop()
    time.sleep(0)  # nothing to wait for: stop() unlinks synchronously
    assert not path.exists()
