"""The poller lease: one portal process polls a series, the others take over when it goes.

Against a real redis-server started on a free port for this module (skipped when
/usr/bin/redis-server is missing); pollers are stubs, so no node is involved.
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

import keyviz.live
from keyviz.lease import RedisLease
from keyviz.live import LiveHub, LocalLease

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


class StubPoller:
    """Stands in for SeriesPoller: counts what runs."""

    running: list[StubPoller] = []

    def __init__(self, hub: LiveHub, series: str) -> None:
        self.hub, self.series = hub, series

    def start(self) -> None:
        StubPoller.running.append(self)

    async def stop(self) -> None:
        StubPoller.running.remove(self)


@pytest.fixture
def stub_pollers(monkeypatch: pytest.MonkeyPatch) -> list[StubPoller]:
    StubPoller.running = []
    monkeypatch.setattr(keyviz.live, "SeriesPoller", StubPoller)
    return StubPoller.running


async def wait_for(check: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def hub(lease: Any) -> LiveHub:
    h = LiveHub(layer=object(), lease=lease)
    h.linger_s = 0
    return h


async def test_one_owner_at_a_time_and_only_the_owner_renews_or_releases(leases):
    a, b = leases
    assert await a.acquire("writes")
    assert not await b.acquire("writes")
    assert await a.acquire("writes")  # ours already: extended
    assert await a.renew("writes")
    assert not await b.renew("writes")
    await b.release("writes")  # not b's: no effect
    assert await a.holder("writes") == "p0"
    await a.release("writes")
    assert await a.holder("writes") is None
    assert await b.acquire("writes")
    assert not await a.renew("writes")


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
    assert not await lease.acquire("writes")
    assert not await lease.renew("writes")
    await lease.release("writes")
    await lease.close()


def test_ttl_must_outlast_the_renew_interval():
    with pytest.raises(ValueError, match="ttl"):
        RedisLease("redis://127.0.0.1:1/0", renew_s=1.0, ttl_ms=1000)


async def test_one_of_two_hubs_polls_and_the_other_takes_over_on_release(leases, stub_pollers):
    first, second = hub(leases[0]), hub(leases[1])
    await first.subscribe("writes")
    await second.subscribe("writes")
    assert [p.hub for p in stub_pollers] == [first]
    await asyncio.sleep(4 * FAST["renew_s"])  # renewals keep it with the first
    assert [p.hub for p in stub_pollers] == [first]
    started = time.monotonic()
    await first.close()  # a clean shutdown releases: the second takes over within a renew
    await wait_for(lambda: [p.hub for p in stub_pollers] == [second])
    assert time.monotonic() - started < 3 * FAST["renew_s"]
    await second.close()
    assert stub_pollers == []
    assert await leases[0].holder("writes") is None


async def test_when_the_holder_dies_another_hub_takes_over_after_the_ttl(leases, stub_pollers):
    first, second = hub(leases[0]), hub(leases[1])
    await first.subscribe("writes")
    await second.subscribe("writes")
    # Death: the first stops renewing without releasing.
    for keeper in first._keepers.values():
        keeper.cancel()
    started = time.monotonic()
    await wait_for(lambda: any(p.hub is second for p in stub_pollers))
    assert time.monotonic() - started >= FAST["ttl_ms"] / 1000 - FAST["renew_s"]
    await second.close()
    first._keepers.clear()
    await first.close()


async def test_a_holder_that_cannot_renew_stops_its_poller_and_retries(leases, stub_pollers):
    first = hub(leases[0])
    await first.subscribe("writes")
    assert len(stub_pollers) == 1
    # Someone else holds it now (as after an expiry during a pause).
    client = leases[1]._client()
    await client.set(leases[0].key("writes"), "intruder", px=300)
    await wait_for(lambda: stub_pollers == [])
    assert first.lost_leases == 1
    # Once the intruder's key expires, the hub (still with a viewer) polls again.
    await wait_for(lambda: len(stub_pollers) == 1)
    await first.close()


async def test_the_last_viewer_leaving_releases_and_stops_retrying(leases, stub_pollers):
    first, second = hub(leases[0]), hub(leases[1])
    await first.subscribe("writes")
    await second.subscribe("writes")
    await second.unsubscribe("writes")
    assert second._keepers == {}
    await first.unsubscribe("writes")
    assert stub_pollers == []
    assert await leases[0].holder("writes") is None
    await asyncio.sleep(3 * FAST["renew_s"])
    assert stub_pollers == []  # nobody has viewers: nobody polls
    await first.close()
    await second.close()


async def test_a_local_lease_has_no_keeper(stub_pollers):
    local = hub(LocalLease())
    await local.subscribe("writes")
    assert len(stub_pollers) == 1
    assert local._keepers == {}
    await local.close()
    await local.subscribe("writes")  # closed: nothing starts again
    assert stub_pollers == []
