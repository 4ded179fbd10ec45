"""The collector against a real-gRPC devcluster, the real store (test database) and the
real ASGI live stream.

The nodes flush when `Flusher` says so, at chosen phases and lateness (a node's
flush is late, never early; a phase near half a step is the hard case), at the
moment the wall clock reaches each flush time, exactly like timers would; the
collector polls them as it would poll real nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from cluster.runtime import node_client, reset_runtime
from devcluster import DevCluster, FlushJitter, Op
from devcluster.pytest_plugin import TEST_TOKEN
from elastickv_admin.asgi import application
from elastickv_admin.lib.config import PortalConfig
from keyviz import store
from keyviz.collector import Collector, close_collector, start_collector
from keyviz.columns import FLAG_UNKNOWN
from keyviz.lease import LocalLease
from keyviz.messages import wall_ms
from proto import admin_pb2
from tests.helpers import BROWSER_ORIGIN, until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STEP = 500
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
ORIGIN = BROWSER_ORIGIN


@dataclass
class Flusher:
    """Flushes each node of `cluster` once a step at its phase (fraction of a step) plus a
    lateness, on the wall clock. `late(node, k)` gives the lateness of flush k in ms."""

    cluster: DevCluster
    phases: Mapping[str, float]
    late: Callable[[str, int], int] = lambda node, k: 0
    down: set[str] = field(default_factory=set)
    held: dict[str, list[int]] = field(default_factory=dict)  # node -> flushes held back
    flushed: dict[str, list[int]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        base = (wall_ms() // STEP + 1) * STEP
        k = 0
        while True:
            due = sorted(
                (base + k * STEP + int(phase * STEP) + self.late(node, k), node)
                for node, phase in self.phases.items()
            )
            for at, node in due:
                await asyncio.sleep(max(0.0, (at - wall_ms()) / 1000))
                if node in self.down:
                    continue
                if node in self.held:
                    self.held[node].append(at)
                    continue
                self.cluster.flush(node, at_ms=at)
                self.flushed.setdefault(node, []).append(at)
            k += 1

    def release(self, node: str) -> None:
        """Flush the columns held back for `node`, late, with their own times."""
        for at in self.held.pop(node, []):
            self.cluster.flush(node, at_ms=at)
            self.flushed.setdefault(node, []).append(at)


@pytest.fixture
async def collect(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await collect(cluster)` points the portal at the cluster and starts its collector."""
    token_file = tmp_path / "token"
    token_file.write_text(TEST_TOKEN)
    overrides: list[Any] = []
    store.clear_bucket_cache()  # the test database was emptied under the process's cache

    async def configure(cluster: DevCluster, **config: Any) -> Collector:
        config.setdefault("writes_merge", "sum")  # the default once settings say so (DESIGN rule 4)
        override = override_settings(
            ELASTICKV_ADMIN=PortalConfig(
                seeds=tuple(cluster.addresses), node_token_file=str(token_file), **config
            )
        )
        override.enable()
        overrides.append(override)
        reset_runtime()
        return start_collector(lease=LocalLease(), step_ms=STEP)

    yield configure
    await close_collector()
    await node_client().close()
    for override in reversed(overrides):
        override.disable()
    reset_runtime()


def final_through(collector: Collector, at_ms: int) -> bool:
    ledger = collector._ledgers.get(WRITES)
    return (
        ledger is not None and ledger.last_final is not None and ledger.last_final * STEP >= at_ms
    )


read_matrix = sync_to_async(store.read_matrix, thread_sensitive=False)


def flushed_writes(cluster: DevCluster, node_id: str) -> int:
    """What a node itself counted (its whole ring), from its own GetKeyVizMatrix."""
    import grpc

    from proto import admin_pb2_grpc

    with grpc.insecure_channel(cluster.node(node_id).address) as channel:
        response = admin_pb2_grpc.AdminStub(channel).GetKeyVizMatrix(
            admin_pb2.GetKeyVizMatrixRequest(series=WRITES),
            metadata=cluster.auth_metadata(node_id),
        )
    return sum(sum(r.values) for r in response.rows)


async def test_with_jitter_the_heatmap_totals_equal_the_sum_of_every_nodes_counts(
    devcluster_factory, collect
):
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    rng = random.Random(7)
    # n2 and n3 straddle half a step; every flush is late by up to 40% of a step.
    lateness = {
        (n, k): rng.randrange(0, int(0.4 * STEP)) for n in ("n1", "n2", "n3") for k in range(400)
    }
    flusher = Flusher(
        cluster, {"n1": 0.1, "n2": 0.49, "n3": 0.51}, late=lambda n, k: lateness[(n, k)]
    )
    flusher.start()
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    started = wall_ms()
    injected = 0
    for _ in range(12):
        ops = [
            Op(
                rng.choice(["n1", "n2", "n3"]),
                "write",
                f"user:{rng.randrange(50)}".encode(),
                count=rng.randrange(1, 9),
            )
            for _ in range(20)
        ]
        injected += cluster.inject(ops)
        await asyncio.sleep(STEP / 1000 / 2)
    ended = wall_ms()
    # Every injected write is in a flushed column once each node flushed again.
    await asyncio.sleep(2 * STEP / 1000)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    await asyncio.sleep(STEP / 1000)  # any amendment of the last columns
    await flusher.stop()
    stored = await read_matrix(WRITES, 0, wall_ms() + STEP, tier=0)
    assert int(stored.matrix.values.sum()) == injected
    assert injected == sum(flushed_writes(cluster, n) for n in ("n1", "n2", "n3"))
    # No doubled and no empty column: each column from the injection on has every node once.
    times = stored.matrix.column_unix_ms.tolist()
    window = [j for j, t in enumerate(times) if started <= t <= ended]
    assert len(window) >= 5
    for j in window:
        assert sorted(stored.contributors[j]) == ["n1", "n2", "n3"], (
            times[j],
            stored.contributors[j],
        )
        assert stored.missing[j] == ()
    assert all(b - a == STEP for a, b in itertools.pairwise(times))


async def test_a_killed_and_restarted_node_keeps_its_past_columns_in_the_store(
    devcluster_factory, collect
):
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    flusher = Flusher(cluster, {"n1": 0.2, "n2": 0.5, "n3": 0.8})
    flusher.start()
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    key = b"user:42"
    route = cluster.route_for_key(key)
    cluster.inject([Op("n2", "write", key, count=17)])
    before = wall_ms()
    await until(lambda: final_through(collector, before + 2 * STEP))
    stored = await read_matrix(WRITES, 0, wall_ms(), tier=0)
    assert int(stored.matrix.values.sum()) == 17

    # n2 goes down (its ring is lost with it) and comes back with an empty ring.
    flusher.down.add("n2")
    cluster.stop_node("n2")
    down_at = wall_ms()
    await until(lambda: final_through(collector, down_at + 3 * STEP))
    cluster.start_node("n2")
    flusher.down.discard("n2")
    back_at = wall_ms()
    await until(lambda: final_through(collector, back_at + 3 * STEP))
    await flusher.stop()
    assert flushed_writes(cluster, "n2") == 0  # the node itself forgot
    after = await read_matrix(WRITES, 0, wall_ms(), tier=0)
    rows = [r.bucket_id for r in after.matrix.rows]
    at = rows.index(f"route:{route.route_id}")
    # Its past columns stay, counted once.
    assert int(after.matrix.values[at].sum()) == 17
    # While it was down its columns are missing, not zero.
    times = after.matrix.column_unix_ms.tolist()
    outage = [j for j, t in enumerate(times) if down_at + STEP < t < back_at]
    assert outage
    assert all("n2" in after.missing[j] for j in outage)
    # It led no group by then (re-elected), so only the missing list says so... unless it
    # still did when the column was merged: then those rows are unknown.
    unknown = after.matrix.unknown
    if unknown is not None:
        assert not unknown[:, [j for j, t in enumerate(times) if t > back_at + STEP]].any()


async def test_a_late_flush_amends_the_published_column_live_and_in_the_store(
    devcluster_factory, collect, viewer_token
):
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    flusher = Flusher(cluster, {"n1": 0.2, "n2": 0.3, "n3": 0.4})
    flusher.start()
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    comm = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[*ORIGIN, (b"authorization", f"Bearer {viewer_token}".encode())],
    )
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from())["type"] == "hello"
    await comm.send_json_to({"type": "subscribe", "series": "writes"})
    subscribed = await comm.receive_json_from()
    assert subscribed["type"] == "subscribed"
    assert subscribed["step_ms"] == STEP
    assert [n["node"] for n in subscribed["nodes"]["nodes"]] == ["n1", "n2", "n3"]

    # n3's next flush is held back past the grace, with its own (late) time.
    key = b"user:7"
    route = cluster.route_for_key(key)
    flusher.held["n3"] = []
    cluster.inject([Op("n3", "write", key, count=5)])
    await until(lambda: len(flusher.held.get("n3", [])) >= 1)
    held_at = flusher.held["n3"][0]
    await until(lambda: final_through(collector, held_at + STEP))
    flusher.release("n3")  # too late for the column, not for the store
    messages: list[dict[str, Any]] = []
    while True:
        message = await comm.receive_json_from(10)
        messages.append(message)
        if message["type"] == "column":
            await comm.send_json_to({"type": "ack", "column_unix_ms": message["column_unix_ms"]})
        if message["type"] == "amend" and any(
            r["bucket_id"] == f"route:{route.route_id}" for r in message["rows"]
        ):
            break
    amend = messages[-1]
    published = [
        m
        for m in messages
        if m["type"] == "column" and m["column_unix_ms"] == amend["column_unix_ms"]
    ]
    # The column went out without n3 (late), then the amendment with its count.
    assert published
    assert "n3" in published[-1]["nodes"]["late"]
    [cell] = [r for r in amend["rows"] if r["bucket_id"] == f"route:{route.route_id}"]
    assert cell["value"] == 5
    assert amend["nodes"]["late"] == []
    await flusher.stop()
    stored = await read_matrix(WRITES, amend["column_unix_ms"], amend["column_unix_ms"] + 1, tier=0)
    assert "n3" in stored.contributors[0]
    assert stored.missing[0] == ()
    at = [r.bucket_id for r in stored.matrix.rows].index(f"route:{route.route_id}")
    assert int(stored.matrix.values[at, 0]) == 5
    await comm.disconnect()


async def test_live_equals_the_store_cell_for_cell_over_a_node_outage(
    devcluster_factory, collect, viewer_token
):
    cluster = devcluster_factory(timers=False, step_ms=STEP, workload_rate=300.0)
    flusher = Flusher(cluster, {"n1": 0.15, "n2": 0.45, "n3": 0.75})
    flusher.start()
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    comm = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[*ORIGIN, (b"authorization", f"Bearer {viewer_token}".encode())],
    )
    assert (await comm.connect())[0]
    await comm.receive_json_from()
    await comm.send_json_to({"type": "subscribe", "series": "writes"})
    live: dict[int, dict[str, Any]] = {}

    async def drain(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            cluster.generate(0.1)
            if await comm.receive_nothing(0.1):
                continue  # (a receive that times out would end the application)
            message = await comm.receive_json_from()
            if message["type"] in ("column", "amend"):
                live[message["column_unix_ms"]] = message  # an amendment replaces it
                if message["type"] == "column":
                    await comm.send_json_to(
                        {"type": "ack", "column_unix_ms": message["column_unix_ms"]}
                    )

    await drain(4 * STEP / 1000)
    flusher.down.add("n1")
    cluster.stop_node("n1")
    await drain(4 * STEP / 1000)
    cluster.start_node("n1")
    flusher.down.discard("n1")
    await drain(6 * STEP / 1000)
    await flusher.stop()
    await drain(3 * STEP / 1000)
    await comm.disconnect()
    times = sorted(live)
    assert len(times) >= 10
    stored = await read_matrix(WRITES, times[0], times[-1] + 1, tier=0)
    assert stored.matrix.column_unix_ms.tolist() == times
    rows = [r.bucket_id for r in stored.matrix.rows]
    unknown = stored.matrix.unknown
    mismatches = []
    saw_missing = False
    for j, t in enumerate(times):
        cells = {r["bucket_id"]: (r["value"], r.get("flags", 0)) for r in live[t]["rows"]}
        saw_missing |= bool(live[t]["nodes"]["late"]) or any(
            not n["ok"] for n in live[t]["nodes"]["nodes"]
        )
        for i, bucket in enumerate(rows):
            value = int(stored.matrix.values[i, j])
            is_unknown = bool(unknown is not None and unknown[i, j])
            got = cells.get(bucket, (0, 0))
            if got[0] != value or bool(got[1] & FLAG_UNKNOWN) != is_unknown:
                mismatches.append((t, bucket, got, value, is_unknown))
        extra = set(cells) - set(rows)
        assert all(cells[b] == (0, 0) for b in extra)
    assert mismatches == []
    assert saw_missing  # the outage really showed


def _move_table(old: str, new: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_failing_store_is_reported_and_never_stops_the_live_columns(
    devcluster_factory, collect, viewer_token
):
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    flusher = Flusher(cluster, {"n1": 0.2, "n2": 0.4, "n3": 0.6})
    flusher.start()
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    comm = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[*ORIGIN, (b"authorization", f"Bearer {viewer_token}".encode())],
    )
    assert (await comm.connect())[0]
    await comm.receive_json_from()
    await comm.send_json_to({"type": "subscribe", "series": "writes"})

    async def columns(n: int) -> list[int]:
        got: list[int] = []
        while len(got) < n:
            message = await comm.receive_json_from(10)
            if message["type"] == "column":
                got.append(message["column_unix_ms"])
                await comm.send_json_to({"type": "ack", "column_unix_ms": got[-1]})
        return got

    await columns(1)
    # The merged history cannot be written any more (a real failure of the database).
    move = sync_to_async(_move_table, thread_sensitive=False)
    await move("keyviz_storedcolumn", "keyviz_storedcolumn_away")
    try:
        during = await columns(4)
        assert all(b - a == STEP for a, b in itertools.pairwise(during))
        doc = await sync_to_async(store.load_state, thread_sensitive=False)("collector")
        assert doc is not None
        assert doc["last_error"].startswith("history not being recorded: ")
    finally:
        await move("keyviz_storedcolumn_away", "keyviz_storedcolumn")
    # Writable again: the error clears with the next merged column saved.
    await until(lambda: collector.history.last_error is None)
    await flusher.stop()
    await comm.disconnect()


async def test_on_the_nodes_own_timers_jitter_and_a_restart_neither_lose_nor_double_counts(
    devcluster_factory, collect
):
    # The devcluster's own flush timers: phases either side of half a step, every flush
    # 0-30% of a step late and one in ten up to 60%; then one node restarts at a new phase.
    cluster = devcluster_factory(
        timers=True,
        step_ms=STEP,
        flush_phases={"n1": 40, "n2": STEP // 2 - 3, "n3": STEP // 2 + 3},
        flush_jitter=FlushJitter(max_ms=int(0.3 * STEP), late_prob=0.1, late_ms=int(0.6 * STEP)),
    )
    collector = await collect(cluster)
    await until(lambda: final_through(collector, wall_ms() - 2 * STEP))
    rng = random.Random(11)
    injected = 0

    async def inject(steps: int) -> None:
        nonlocal injected
        for _ in range(steps):
            for _ in range(10):
                node = rng.choice(["n1", "n2", "n3"])
                key = f"user:{rng.randrange(50)}".encode()
                injected += cluster.inject([Op(node, "write", key, count=rng.randrange(1, 9))])
            await asyncio.sleep(STEP / 1000)

    await inject(6)
    # n2 restarts at another phase: its ring is gone from the node, not from the store.
    await asyncio.sleep(2 * STEP / 1000)  # every count flushed (nothing new meanwhile)
    n2_before = flushed_writes(cluster, "n2")
    cluster.restart_node("n2", new_phase_ms=STEP // 4)
    await inject(6)
    await asyncio.sleep(2 * STEP / 1000)
    await until(lambda: final_through(collector, wall_ms() - STEP))
    await asyncio.sleep(STEP / 1000)  # amendments of the last columns
    on_nodes = sum(flushed_writes(cluster, n) for n in ("n1", "n2", "n3"))
    assert n2_before > 0
    assert on_nodes + n2_before == injected
    stored = await read_matrix(WRITES, 0, wall_ms() + STEP, tier=0)
    # Every count any node flushed, once.
    assert int(stored.matrix.values.sum()) == injected
    times = stored.matrix.column_unix_ms.tolist()
    assert all(b - a == STEP for a, b in itertools.pairwise(times))


async def test_a_restarted_collector_continues_from_its_state_without_doubling(
    devcluster_factory, collect
):
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    flusher = Flusher(cluster, {"n1": 0.1, "n2": 0.45, "n3": 0.7}, late=lambda n, k: 37 * k % 150)
    flusher.start()
    first = await collect(cluster)
    await until(lambda: final_through(first, wall_ms() - 2 * STEP))
    injected = cluster.inject([Op("n1", "write", b"user:1", count=6)])
    await asyncio.sleep(2 * STEP / 1000)
    await close_collector()  # a portal restart: state saved, lease released
    assert not first.holding
    doc = await sync_to_async(store.load_state, thread_sensitive=False)("collector")
    assert doc is not None
    assert sorted(doc["nodes"]) == ["n1", "n2", "n3"]
    injected += cluster.inject([Op("n2", "write", b"user:2", count=5)])
    await asyncio.sleep(STEP / 1000)  # columns flushed while no collector runs
    second = start_collector(lease=LocalLease(), step_ms=STEP)
    injected += cluster.inject([Op("n3", "write", b"user:3", count=4)])
    await asyncio.sleep(2 * STEP / 1000)
    await until(lambda: final_through(second, wall_ms() - 2 * STEP))
    await asyncio.sleep(STEP / 1000)
    await flusher.stop()
    stored = await read_matrix(WRITES, 0, wall_ms() + STEP, tier=0)
    # Everything counted once, across the restart; no column lost in the gap.
    assert int(stored.matrix.values.sum()) == injected == 15
    times = stored.matrix.column_unix_ms.tolist()
    assert all(b - a == STEP for a, b in itertools.pairwise(times))
    assert all(len(c) == 3 for c in stored.contributors[1:])


async def test_a_start_backfills_every_column_of_the_nodes_rings(devcluster_factory, collect):
    # The nodes have flushed 100 columns (more than a collector keeps in memory per node)
    # before any collector runs: the first one takes all of them, once.
    cluster = devcluster_factory(timers=False, step_ms=STEP)
    start = (wall_ms() // STEP - 103) * STEP
    injected = 0
    for k in range(100):
        for i, node in enumerate(("n1", "n2", "n3")):
            injected += cluster.inject([Op(node, "write", f"user:{k}".encode(), count=i + 1)])
            cluster.flush(node, at_ms=start + k * STEP + 100 * (i + 1))
    await collect(cluster)

    async def all_stored() -> Any:
        got = await read_matrix(WRITES, 0, wall_ms(), tier=0)
        return got if len(got.matrix.column_unix_ms) >= 100 else None

    stored = await until(all_stored)
    assert int(stored.matrix.values.sum()) == injected == 600
    # n3 flushes at 60% of the step: its columns close the next merged column (rule 1),
    # so 101 columns: the first without n3 (not expected before its first column), the
    # last with n3 only (n1 and n2 flushed no more: missing, their cells unknown).
    contributors = [sorted(c) for c in stored.contributors]
    assert len(contributors) == 101
    assert contributors[0] == ["n1", "n2"]
    assert stored.missing[0] == ()
    assert all(c == ["n1", "n2", "n3"] for c in contributors[1:-1])
    assert contributors[-1] == ["n3"]
    assert stored.missing[-1] == ("n1", "n2")
