"""Two portal processes on one PostgreSQL and one Redis, for real.

One devcluster (1 s columns on its own timers, a steady workload) and two
`elastickv-admin serve` processes sharing a fresh database and a Redis
database. Checked: sign-ins through both processes form one valid audit
chain; a viewer on each process receives the same columns while the nodes see
one fan-out per step (the collector lease: one process collects); SIGKILL of
the process holding the lease hands collecting to the other within seconds,
and its viewer keeps receiving new columns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.cookiejar
import json
import os
import re
import signal
import struct
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from django.conf import settings
from redis import Redis

from devcluster import DevCluster, FlushJitter
from devcluster.pytest_plugin import TEST_TOKEN
from keyviz.lease import COLLECTOR, KEY_PREFIX, RENEW_S, TTL_MS
from proto import admin_pb2, admin_pb2_grpc
from tests.conftest import PortalProcess
from tests.helpers import require

pytestmark = pytest.mark.services

STEP_MS = 1_000
SIGN_INS = 3  # per process
LEASE_KEY = KEY_PREFIX + COLLECTOR


# ---------------------------------------------------------------- backends


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database next to the test one: the portals migrate it themselves."""
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "DATABASE_URL does not point at PostgreSQL (scripts/test.sh starts one)",
    )
    base = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    name = f"ekv_multiprocess_{uuid.uuid4().hex[:8]}"
    admin = base._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The services Redis, on a database of its own (no lease or channel left by others)."""
    require(bool(settings.REDIS_URL), "REDIS_URL is not set (scripts/test.sh starts Redis)")
    url = urllib.parse.urlsplit(settings.REDIS_URL)._replace(path="/9").geturl()
    client = Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# ---------------------------------------------------------------- clients


def sign_in(portal: PortalProcess) -> None:
    """The real login form over HTTP: GET for the CSRF token, POST the credentials."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(portal.url + "/login/", timeout=10) as response:
        page = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    form = urllib.parse.urlencode(
        {
            "username": portal.admin_username,
            "password": portal.admin_password,
            "csrfmiddlewaretoken": match.group(1),
        }
    ).encode()
    request = urllib.request.Request(
        portal.url + "/login/", data=form, headers={"Referer": portal.url + "/login/"}
    )
    with opener.open(request, timeout=10) as response:
        assert "/login/" not in response.url, f"sign-in on {portal.url} failed"


def audit_count(portal: PortalProcess) -> int:
    out = portal.manage("audit_verify")  # exits non-zero (RuntimeError) on a broken chain
    match = re.search(r"audit chain OK: (\d+) events verified", out)
    assert match, out
    return int(match.group(1))


class StreamViewer:
    """A live viewer over real TCP: subscribes to writes, acks every column.

    A minimal RFC 6455 client on asyncio streams (autobahn's asyncio flavour cannot load
    in a process where daphne's Twisted one is loaded, and `websockets` is not installed).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.columns: list[int] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.got_column = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, portal: PortalProcess, token: str) -> StreamViewer:
        host, port = portal.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /api/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {portal.url}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        viewer = cls(reader, writer)
        viewer.send({"type": "subscribe", "series": "writes"})
        await asyncio.wait_for(viewer.subscribed.wait(), 10)
        return viewer

    def send(self, message: dict[str, Any]) -> None:
        self._frame(0x1, json.dumps(message).encode())

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode]) + size + mask + masked)

    async def _read(self) -> None:
        while True:
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                self.close_reason = payload[2:].decode()
                self._frame(0x8, payload[:2])  # the closing handshake
                return
            if opcode == 0x9:
                self._frame(0xA, payload)
            elif opcode == 0x1:
                self._on_message(json.loads(payload))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribed":
            self.subscribed.set()
        elif message["type"] == "column":
            at = int(message["column_unix_ms"])
            self.columns.append(at)
            self.got_column.set()
            self.send({"type": "ack", "column_unix_ms": at})

    async def column_after(self, at: int, within: float) -> int:
        """The first column newer than `at`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            newer = [t for t in self.columns if t > at]
            if newer:
                return newer[0]
            self.got_column.clear()
            await asyncio.wait_for(self.got_column.wait(), max(0.01, deadline - time.monotonic()))

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task


def flushed_columns(cluster: DevCluster, node_id: str, since_ms: int, until_ms: int) -> int:
    """How many columns a node flushed in [since, until) (read from its own matrix)."""
    with grpc.insecure_channel(cluster.node(node_id).address) as channel:
        response = admin_pb2_grpc.AdminStub(channel).GetKeyVizMatrix(
            admin_pb2.GetKeyVizMatrixRequest(
                series=admin_pb2.KEYVIZ_SERIES_WRITES, from_unix_ms=since_ms, to_unix_ms=until_ms
            ),
            metadata=cluster.auth_metadata(node_id),
        )
    return len(response.column_unix_ms)


def holder_pid(redis: Redis) -> int:
    """The pid of the process collecting (the lease value is host:pid:random)."""
    value = redis.get(LEASE_KEY)
    assert value is not None, "nobody holds the collector lease"
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text.split(":")[1])


# ---------------------------------------------------------------- the test


def test_two_portal_processes_share_one_collector_one_audit_chain_and_fail_over(
    devcluster_factory: Callable[..., DevCluster],
    portal_factory: Callable[..., PortalProcess],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    # Flushes exactly on phase: the test counts one poll per flushed column.
    cluster = devcluster_factory(
        timers=True, step_ms=STEP_MS, workload_rate=300.0, flush_jitter=FlushJitter()
    )
    token_file = tmp_path / "node-token"
    token_file.write_text(TEST_TOKEN)
    args = ["--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token_file)]
    args += ["--keyvizStep", f"{STEP_MS}ms"]  # the nodes' step
    # Same database, same Redis, same keys (the audit chain and token hashes are shared).
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ELASTICKV_ADMIN_KEYVIZ_STEP": "1s",
    }
    first = portal_factory(args, env)
    second = portal_factory(args, env, create_admin=False)  # migrations again: a no-op
    second.admin_password = first.admin_password
    portals = {first.proc.pid: first, second.proc.pid: second}

    # Sign-ins through both processes at once: one chain, every event in it.
    before = audit_count(first)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(sign_in, [first, second] * SIGN_INS))
    assert audit_count(second) == before + 2 * SIGN_INS

    token = first.manage("create_api_token", first.admin_username).strip()
    asyncio.run(_live(cluster, portals, token, redis_url))
    # The chain is still whole after a process was killed.
    # + the API token, + one websocket.subscribe per viewer (written by each process).
    assert audit_count(first) == before + 2 * SIGN_INS + 1 + 2


async def _live(
    cluster: DevCluster, portals: dict[int, PortalProcess], token: str, redis_url: str
) -> None:
    first, second = portals.values()
    viewers = {first.proc.pid: await StreamViewer.connect(first, token)}
    await viewers[first.proc.pid].column_after(0, 60)  # (a step set, or inferred: 32 columns)
    viewers[second.proc.pid] = await StreamViewer.connect(second, token)
    await viewers[second.proc.pid].column_after(0, 10)

    # Both viewers get the same columns; the nodes see one fan-out per step.
    cluster.reset_rpc_counts()
    since = int(time.time() * 1000)
    start = max(v.columns[-1] for v in viewers.values())
    end = start
    for _ in range(5):
        end = max([await v.column_after(end, 5) for v in viewers.values()])
    counts = {n.node_id: cluster.rpc_counts(n.node_id) for n in cluster.nodes}
    until = int(time.time() * 1000)
    seen = [[t for t in v.columns if start < t <= end] for v in viewers.values()]
    assert seen[0] == seen[1], seen
    assert len(seen[0]) >= 5
    for node in cluster.nodes:
        flushed = flushed_columns(cluster, node.node_id, since, until)
        calls = counts[node.node_id].get("GetKeyVizMatrix", 0)
        # One call per series per node per flushed column although two processes have
        # viewers (+-1 flush on the edges, a round asked again after a late flush).
        assert 4 * (flushed - 1) <= calls <= 4 * (flushed + 2), (node.node_id, calls, flushed)

    # Kill the lease holder: the other process takes over.
    redis = Redis.from_url(redis_url)
    pid = holder_pid(redis)
    assert pid in portals
    victim = portals[pid]
    other_pid = next(p for p in portals if p != pid)
    survivor_viewer = viewers[other_pid]
    last = max(survivor_viewer.columns)
    killed_at = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    # The lease expires (ttl), the survivor's collector takes it (one renew later), continues
    # from the saved state and sends the next final column (up to a step and a half).
    bound = TTL_MS / 1000 + RENEW_S + 2.5 * STEP_MS / 1000 + 2
    taken = await survivor_viewer.column_after(last, bound)
    took = time.monotonic() - killed_at
    assert took < bound, took
    print(f"SIGKILL of the lease holder -> next column via the other process in {took:.1f} s")
    assert holder_pid(redis) == other_pid
    # And it keeps coming, step after step.
    await survivor_viewer.column_after(taken, 2.5 * STEP_MS / 1000)

    # A graceful stop (SIGTERM) says goodbye to its viewers and releases the lease at once
    # (an unreleased key would outlive the signal by two renew intervals at least).
    portals[other_pid].proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    await asyncio.wait_for(survivor_viewer.task, 5)
    assert (survivor_viewer.close_code, survivor_viewer.close_reason) == (
        1001,
        "portal shutting down",
    )
    while redis.get(LEASE_KEY) is not None:
        assert time.monotonic() - stopped_at < (TTL_MS / 1000 - RENEW_S) / 2, "lease not released"
        await asyncio.sleep(0.02)
    assert await asyncio.to_thread(portals[other_pid].proc.wait, 10) == 0
    redis.close()
    for viewer in viewers.values():
        await viewer.close()
