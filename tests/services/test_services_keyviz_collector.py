"""One KeyViz collector across two portal processes on PostgreSQL + Redis, for real.

A devcluster on its own timers (1 s columns, a steady workload) and two
`elastickv-admin serve` processes sharing a fresh database and a Redis
database. Checked: exactly one process collects (the lease `keyviz:collector`);
SIGKILL of it hands collecting to the other within a few steps, which continues
from the state in the database; over the whole run, every column every node
flushed is stored exactly once, in exactly one merged column, and no merged
column is missing from the tier-0 history.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from django.conf import settings
from redis import Redis

from devcluster import DevCluster
from devcluster.pytest_plugin import TEST_TOKEN
from keyviz.lease import COLLECTOR, KEY_PREFIX, RENEW_S, TTL_MS
from proto import admin_pb2, admin_pb2_grpc
from tests.conftest import PortalProcess
from tests.helpers import require

pytestmark = pytest.mark.services

STEP_MS = 1_000
LEASE_KEY = KEY_PREFIX + COLLECTOR
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database next to the test one: the portals migrate it themselves."""
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "DATABASE_URL does not point at PostgreSQL (scripts/test.sh starts one)",
    )
    base = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    name = f"ekv_collector_{uuid.uuid4().hex[:8]}"
    admin = base._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    require(bool(settings.REDIS_URL), "REDIS_URL is not set (scripts/test.sh starts Redis)")
    url = urllib.parse.urlsplit(settings.REDIS_URL)._replace(path="/8").geturl()
    client = Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def holder_pid(redis: Redis) -> int | None:
    value = redis.get(LEASE_KEY)
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text.split(":")[1])  # host:pid:random


def state(db: str) -> dict[str, Any]:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT doc FROM keyviz_collectorstate WHERE key = 'collector'"
        ).fetchone()
    if row is None:
        return {}
    doc = row[0]
    return dict(json.loads(doc) if isinstance(doc, str) else doc)


def last_final(db: str) -> int:
    return int((state(db).get("last_final_ms") or {}).get("writes") or 0)


def wait(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.05)


def ring_times(cluster: DevCluster, node_id: str) -> list[int]:
    """A node's own column times (its whole ring)."""
    with grpc.insecure_channel(cluster.node(node_id).address) as channel:
        response = admin_pb2_grpc.AdminStub(channel).GetKeyVizMatrix(
            admin_pb2.GetKeyVizMatrixRequest(series=WRITES),
            metadata=cluster.auth_metadata(node_id),
        )
    return list(response.column_unix_ms)


def test_one_collector_for_two_processes_and_a_killed_holder_loses_or_doubles_no_column(
    devcluster_factory: Callable[..., DevCluster],
    portal_factory: Callable[..., PortalProcess],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    cluster = devcluster_factory(timers=True, step_ms=STEP_MS, workload_rate=300.0)
    token_file = tmp_path / "node-token"
    token_file.write_text(TEST_TOKEN)
    args = ["--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token_file)]
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ELASTICKV_ADMIN_KEYVIZ_STEP": "1s",
        "ELASTICKV_ADMIN_WRITES_MERGE": "sum",
    }
    first = portal_factory(args, env)
    second = portal_factory(args, env, create_admin=False)
    portals = {first.proc.pid: first, second.proc.pid: second}
    redis = Redis.from_url(redis_url)

    pid = wait(lambda: holder_pid(redis), 20, "a process holds the collector lease")
    assert pid in portals
    # Collecting: merged columns go final, step after step, by the holder only.
    wait(lambda: last_final(database_url), 90, "a first final column")
    started = last_final(database_url)
    wait(lambda: last_final(database_url) >= started + 3 * STEP_MS, 20, "columns keep coming")
    assert holder_pid(redis) == pid
    assert str(pid) in state(database_url)["holder"]

    other = next(p for p in portals if p != pid)
    before = last_final(database_url)
    killed_at = time.monotonic()
    portals[pid].proc.send_signal(signal.SIGKILL)
    portals[pid].proc.wait(timeout=10)
    wait(lambda: holder_pid(redis) == other, TTL_MS / 1000 + 3 * RENEW_S, "takeover")
    # The new holder continues from the saved state: final columns past the old ones.
    wait(lambda: last_final(database_url) > before + STEP_MS, 30, "columns after the takeover")
    took = time.monotonic() - killed_at
    print(f"SIGKILL of the collector -> next final column by the other process in {took:.1f} s")
    assert str(other) in state(database_url)["holder"]
    end = last_final(database_url) + 3 * STEP_MS
    wait(lambda: last_final(database_url) >= end, 30, "three more columns")
    time.sleep(2 * STEP_MS / 1000)  # amendments of the last columns

    with psycopg.connect(database_url) as conn:
        merged = conn.execute(
            "SELECT column_ms, contributors, missing FROM keyviz_storedcolumn"
            " WHERE tier = 0 AND series = %s AND column_ms <= %s ORDER BY column_ms",
            (WRITES, end),
        ).fetchall()
        raw = conn.execute(
            "SELECT node, slot_ms, node_column_ms FROM keyviz_storednodecolumn"
            " WHERE series = %s AND slot_ms <= %s",
            (WRITES, end),
        ).fetchall()
    times = [int(t) for t, _, _ in merged]
    # No merged column lost: one per step from the first to the last, across the kill.
    assert times == list(range(times[0], times[-1] + STEP_MS, STEP_MS)), times
    assert times[0] <= started
    assert times[-1] >= end - STEP_MS
    # No node column lost or doubled: each stored once, in one slot, each slot once per node.
    per_slot = Counter((node, int(slot)) for node, slot, _ in raw)
    assert max(per_slot.values()) == 1
    stored = {
        n.node_id: sorted(int(t) for node, _, t in raw if node == n.node_id) for n in cluster.nodes
    }
    for node in cluster.nodes:
        first_ms, last_ms = stored[node.node_id][0], stored[node.node_id][-1]
        ring = [t for t in ring_times(cluster, node.node_id) if first_ms <= t <= last_ms]
        assert stored[node.node_id] == ring, node.node_id
    # Each merged column names the node columns it holds, every node once.
    for t, contributors, _missing in merged:
        doc = contributors if isinstance(contributors, dict) else json.loads(contributors)
        for node, at in doc.items():
            assert (node, int(t)) in per_slot
            assert int(at) in stored[node]
    assert sum(len(c if isinstance(c, dict) else json.loads(c)) for _, c, _ in merged) == sum(
        1 for _, slot, _ in raw if int(slot) in set(times)
    )
    redis.close()
