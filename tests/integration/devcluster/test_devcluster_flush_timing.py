"""Flush timing as real nodes show it, seen on the wire (GetKeyVizMatrix column stamps).

CONTRACT.md: each node's columns sit at its own phase within the step (set at boot, so
a restart moves it), flushes are late by 0-280 ms and now and then later, never early;
a restarted node answers with its past columns gone, a node that is down answers nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from devcluster import DevCluster, FlushJitter
from devcluster.__main__ import main as devcluster_main
from devcluster.pytest_plugin import StubsFactory, matrix
from proto import admin_pb2

pytestmark = pytest.mark.integration

STEP = 400


def stamps(cluster: DevCluster, stubs: StubsFactory, node_id: str) -> list[int]:
    return list(matrix(cluster, stubs, node_id).column_unix_ms)


def fresh_stamps(cluster: DevCluster, stubs: StubsFactory, node_id: str) -> list[int]:
    """Over a channel of its own: the shared subchannel of a node that was down may
    still be backing off from the refused connection."""
    admin = stubs(cluster.node(node_id).address, [("grpc.use_local_subchannel_pool", 1)]).admin
    request = admin_pb2.GetKeyVizMatrixRequest(series=admin_pb2.KEYVIZ_SERIES_WRITES)
    response = admin.GetKeyVizMatrix(request, metadata=cluster.auth_metadata(node_id))
    return list(response.column_unix_ms)


def wait_for(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lateness(stamp: int, phase: int) -> int:
    return (stamp - phase) % STEP


def test_timed_columns_are_stamped_at_each_nodes_phase_including_near_half_a_step(
    devcluster_factory, devcluster_stubs
):
    # 199 of 400 ms is within 1% of half a step; 399 sits just before the boundary.
    phases = {"n1": 0, "n2": 199, "n3": 399}
    cluster = devcluster_factory(profile="design", timers=True, step_ms=STEP, flush_phases=phases)
    wait_for(lambda: all(len(stamps(cluster, devcluster_stubs, n)) >= 3 for n in phases))

    for node_id, phase in phases.items():
        got = stamps(cluster, devcluster_stubs, node_id)
        assert [t % STEP for t in got] == [phase] * len(got), node_id
        assert cluster.flush_phase(node_id) == phase


def test_flushes_are_late_never_early_and_late_flushes_show(devcluster_factory, devcluster_stubs):
    phases = {"n1": 100, "n2": 100, "n3": 100}
    cluster = devcluster_factory(timers=True, step_ms=STEP, flush_phases=phases)  # upstream
    cluster.set_flush_jitter("n2", max_ms=50, late_prob=1.0, late_ms=300)  # every flush late
    cluster.set_flush_jitter("n3")  # exactly on phase
    n1_default = FlushJitter.upstream(STEP)
    assert n1_default.max_ms > 0  # upstream nodes jitter by default, like real ones
    wait_for(lambda: all(len(stamps(cluster, devcluster_stubs, n)) >= 8 for n in phases))

    # (The first column of n2/n3 may predate their jitter setting: skip it.)
    n1 = [lateness(t, 100) for t in stamps(cluster, devcluster_stubs, "n1")]
    n2 = [lateness(t, 100) for t in stamps(cluster, devcluster_stubs, "n2")[1:]]
    n3 = [lateness(t, 100) for t in stamps(cluster, devcluster_stubs, "n3")[1:]]
    assert all(0 <= x <= n1_default.late_ms for x in n1)
    assert any(x > 0 for x in n1)  # the default jitter is on the wire
    assert all(50 <= x <= 300 for x in n2)
    assert n3 == [0] * len(n3)


def test_restart_loses_the_ring_and_moves_the_phase(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(
        profile="design", timers=True, step_ms=STEP, flush_phases={"n2": 50}
    )
    wait_for(lambda: len(stamps(cluster, devcluster_stubs, "n2")) >= 2)
    before = stamps(cluster, devcluster_stubs, "n2")
    assert {t % STEP for t in before} == {50}

    cluster.stop_node("n2")
    with pytest.raises(grpc.RpcError) as down:
        stamps(cluster, devcluster_stubs, "n2")
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE  # a down node answers nothing

    cluster.start_node("n2", phase_ms=250)
    after_restart = fresh_stamps(cluster, devcluster_stubs, "n2")
    assert not set(after_restart) & set(before)  # the past columns are gone
    wait_for(lambda: len(fresh_stamps(cluster, devcluster_stubs, "n2")) >= 2)
    assert {t % STEP for t in fresh_stamps(cluster, devcluster_stubs, "n2")} == {250}


def test_restart_node_without_a_phase_takes_its_boot_time(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(
        profile="design", timers=True, step_ms=STEP, flush_phases={"n1": 10}
    )
    wait_for(lambda: len(stamps(cluster, devcluster_stubs, "n1")) >= 1)
    booted = time.time_ns() // 1_000_000
    cluster.restart_node("n1")
    restarted = time.time_ns() // 1_000_000
    phase = cluster.flush_phase("n1")
    assert phase is not None
    # The new timer started at the boot, somewhere between the two clock readings (no
    # threshold: a starved machine may take long to restart).
    assert (phase - booted) % STEP <= restarted - booted or restarted - booted >= STEP
    wait_for(lambda: len(stamps(cluster, devcluster_stubs, "n1")) >= 2)
    got = stamps(cluster, devcluster_stubs, "n1")
    assert {t % STEP for t in got} == {phase}
    assert min(got) > booted


def test_flush_timing_settings_refuse_impossible_values():
    cluster = DevCluster(3, token="t", step_ms=STEP)
    with pytest.raises(ValueError, match=r"flush phase must be within 0\.\.399"):
        cluster.set_flush_phase("n1", STEP)
    with pytest.raises(ValueError, match="must stay under the step"):
        cluster.set_flush_jitter("n1", max_ms=STEP)
    with pytest.raises(ValueError, match=r"late_prob must be within 0\.\.1"):
        cluster.set_flush_jitter("n1", late_prob=2.0)
    with pytest.raises(ValueError, match="flush phase must be within"):
        DevCluster(3, token="t", step_ms=STEP, flush_phases={"n1": -1})


def test_cli_flush_flags_say_what_is_wrong(capsys):
    assert devcluster_main(["--flush-phase", "n2", "--base-port", "0"]) == 2
    assert "--flush-phase takes NODE=DURATION" in capsys.readouterr().err
    assert devcluster_main(["--flush-jitter", "70s", "--base-port", "0"]) == 2  # step 60s
    assert "flush jitter must stay under the step" in capsys.readouterr().err
