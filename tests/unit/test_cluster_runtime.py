"""The process's long-lived node objects: one runtime, one single-flight helper, one reset."""

from __future__ import annotations

import asyncio

from django.test import override_settings

from cluster.flight import SingleFlight
from cluster.runtime import discovery, node_client, reset_runtime, runtime
from elastickv_admin.lib.config import PortalConfig


async def test_concurrent_askers_share_one_call_and_a_cancelled_one_does_not_cancel_it():
    flight: SingleFlight[int] = SingleFlight()
    started = 0
    release = asyncio.Event()

    async def call() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    waiters = [asyncio.ensure_future(flight.run("k", call)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # a page load that went away
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters[1:]) == [1, 1]
    assert started == 1
    # Finished is not cached: the next ask makes a new call.
    assert await flight.run("k", call) == 2


async def test_different_keys_run_apart():
    flight: SingleFlight[str] = SingleFlight()

    async def echo(value: str) -> str:
        await asyncio.sleep(0)
        return value

    a, b = await asyncio.gather(
        flight.run("a", lambda: echo("a")), flight.run("b", lambda: echo("b"))
    )
    assert (a, b) == ("a", "b")


def test_one_reset_forgets_every_process_wide_object_and_follows_the_settings():
    first = PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True)
    second = PortalConfig(seeds=("127.0.0.1:2",), insecure_no_auth=True)
    with override_settings(ELASTICKV_ADMIN=first):
        reset_runtime()
        before = runtime()
        client, members, health = node_client(), discovery(), before.shared("x", object)
        assert runtime() is before
        assert node_client() is client
        assert discovery() is members
        assert before.shared("x", object) is health
        assert members.client is client
    with override_settings(ELASTICKV_ADMIN=second):
        reset_runtime()
        after = runtime()
        assert after is not before
        assert node_client() is not client
        assert discovery() is not members
        assert after.shared("x", object) is not health
        assert after.support is not before.support
        assert after.raft_history is not before.raft_history
        assert discovery().seeds == ("127.0.0.1:2",)
    reset_runtime()
