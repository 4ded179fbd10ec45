"""The collector lease: one portal process collects, another takes over when it goes.

Against a real redis-server started on a free port for this module (skipped when
/usr/bin/redis-server is missing); the collecting itself is a stub here, so no
node or database is involved (tests/services covers the whole thing).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyviz.collector import Collector
from keyviz.lease import COLLECTOR, Lease, LocalLease, RedisLease

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
FAST = {"renew_s": 0.05, "ttl_ms": 200}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    port = _free_port()
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def leases(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[list[RedisLease]]:
    # A key prefix per test: the tests share one server.
    prefix = f"test:{request.node.name}:"
    made = [RedisLease(redis_url, owner=f"p{i}", prefix=prefix, **FAST) for i in range(2)]  # type: ignore[arg-type]
    yield made
    for lease in made:
        await lease.close()


class StubCollector(Collector):
    """Collects nothing: counts who is collecting."""

    working: list[StubCollector] = []

    async def _collect_forever(self) -> None:
        StubCollector.working.append(self)
        try:
            await asyncio.Event().wait()
        finally:
            StubCollector.working.remove(self)


@pytest.fixture
def working() -> list[StubCollector]:
    StubCollector.working = []
    return StubCollector.working


async def wait_for(check: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def collector(lease: Lease) -> StubCollector:
    c = StubCollector(layer=object(), lease=lease)
    c.start()
    return c


async def test_one_owner_at_a_time_and_only_the_owner_renews_or_releases(leases):
    a, b = leases
    assert await a.acquire("collector")
    assert not await b.acquire("collector")
    assert await a.acquire("collector")  # ours already: extended
    assert await a.renew("collector")
    assert not await b.renew("collector")
    await b.release("collector")  # not b's: no effect
    assert await a.holder("collector") == "p0"
    await a.release("collector")
    assert await a.holder("collector") is None
    assert await b.acquire("collector")
    assert not await a.renew("collector")


async def test_a_lease_nobody_renews_expires_after_its_ttl(leases):
    a, b = leases
    assert await a.acquire("reads")
    started = time.monotonic()
    for _ in range(100):
        if await b.acquire("reads"):
            break
        await asyncio.sleep(0.01)
    waited = time.monotonic() - started
    assert 0.15 <= waited < 0.5, waited
    assert not await a.renew("reads")


async def test_an_unreachable_redis_grants_nothing_and_does_not_raise():
    lease = RedisLease(f"redis://127.0.0.1:{_free_port()}/0", renew_s=0.2, ttl_ms=600)
    assert not await lease.acquire("collector")
    assert not await lease.renew("collector")
    await lease.release("collector")
    await lease.close()


def test_ttl_must_outlast_the_renew_interval():
    with pytest.raises(ValueError, match="ttl"):
        RedisLease("redis://127.0.0.1:1/0", renew_s=1.0, ttl_ms=1000)


async def test_one_of_two_collectors_works_and_the_other_takes_over_on_release(leases, working):
    first = collector(leases[0])
    await wait_for(lambda: working == [first])
    second = collector(leases[1])
    await asyncio.sleep(4 * FAST["renew_s"])  # renewals keep it with the first
    assert working == [first]
    assert await leases[0].holder(COLLECTOR) == "p0"
    started = time.monotonic()
    await first.close()  # a clean shutdown releases: the second takes over within a renew
    await wait_for(lambda: working == [second])
    assert time.monotonic() - started < 3 * FAST["renew_s"]
    await second.close()
    assert working == []
    assert await leases[0].holder(COLLECTOR) is None


async def test_when_the_holder_dies_another_collector_takes_over_after_the_ttl(leases, working):
    first = collector(leases[0])
    await wait_for(lambda: working == [first])
    second = collector(leases[1])
    # Death: the first stops renewing without releasing (its work goes on, as in a hung
    # process; the key expires all the same).
    assert first._task is not None
    first._task.cancel()
    started = time.monotonic()
    await wait_for(lambda: second in working)
    assert time.monotonic() - started >= FAST["ttl_ms"] / 1000 - FAST["renew_s"]
    await second.close()
    await first.close()


async def test_a_holder_that_cannot_renew_stops_collecting_and_retries(leases, working):
    first = collector(leases[0])
    await wait_for(lambda: working == [first])
    # Someone else holds it now (as after an expiry during a pause).
    client = leases[1]._client()
    await client.set(leases[0].key(COLLECTOR), "intruder", px=300)
    await wait_for(lambda: working == [])
    assert not first.holding
    # Once the intruder's key expires, it collects again.
    await wait_for(lambda: working == [first])
    await first.close()


async def test_a_local_lease_collects_at_once_and_closing_stops_it(working):
    local = collector(LocalLease())
    await wait_for(lambda: working == [local])
    await local.close()
    assert working == []
    assert not local.holding
