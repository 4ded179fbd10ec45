"""What a probe answer says about an RPC, and how long the portal believes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.client import NodeError
from cluster.probes import (
    PROBED_METHODS,
    Support,
    SupportCache,
    classify_probe,
)


@pytest.mark.parametrize(
    ("method", "error", "support"),
    [
        ("GetAdapterSummary", None, Support.YES),
        ("GetAdapterSummary", NodeError("UNIMPLEMENTED", "x"), Support.NO),
        ("StreamEvents", NodeError("UNIMPLEMENTED", "x"), Support.NO),
        (
            "GetKeyVizMatrix",
            NodeError("UNAVAILABLE", "KeyViz disabled on this node (x)"),
            Support.DISABLED,
        ),
        ("StreamEvents", NodeError("UNAVAILABLE", "unavailable: sampler off"), Support.DISABLED),
        (
            "GetKeyVizMatrix",
            NodeError("UNAVAILABLE", "unreachable: connection refused", reachable=False),
            Support.UNKNOWN,
        ),
        ("GetRouteDetail", NodeError("NOT_FOUND", "no bucket ''"), Support.YES),
        ("GetRouteDetail", NodeError("INVALID_ARGUMENT", "bucket id"), Support.YES),
        ("GetRouteDetail", NodeError("MALFORMED", "could not be decoded"), Support.YES),
        ("GetAdapterSummary", NodeError("UNAUTHENTICATED", "token"), Support.UNKNOWN),
        (
            "GetAdapterSummary",
            NodeError("DEADLINE_EXCEEDED", "slow", reachable=False),
            Support.UNKNOWN,
        ),
    ],
)
def test_probe_answers_classify_support(method, error, support):
    assert classify_probe(method, error).support is support


def test_unimplemented_says_the_method_is_not_supported_by_the_node():
    rpc = classify_probe("GetRouteDetail", NodeError("UNIMPLEMENTED", "whatever"))
    assert rpc.detail == "GetRouteDetail is not supported by this node"


class FakeClient:
    """Answers every probe from a table; counts calls per method."""

    capacity = 4  # addresses the real client holds state for (cap + seeds)

    def __init__(self, errors: dict[str, NodeError]) -> None:
        self.errors = errors
        self.calls: dict[str, int] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.epochs: dict[str, int] = {}  # as NodeClient.epoch: bumps on a reconnect

    def epoch(self, address: str) -> int:
        return self.epochs.get(address, 0)

    async def _answer(self, method: str) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        await self.gate.wait()
        if method in self.errors:
            raise self.errors[method]
        return object()

    async def call(self, address: str, method: str, request: Any = None, **kw: Any) -> Any:
        return await self._answer(method)

    async def probe_stream(self, address: str, method: str, request: Any, **kw: Any) -> None:
        await self._answer(method)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_definitive_support_is_remembered_for_the_ttl():
    client = FakeClient({"StreamEvents": NodeError("UNIMPLEMENTED", "x")})
    clock = Clock()
    cache = SupportCache(ttl_s=60, clock=clock)
    first = await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert first.as_dict() == {
        "GetKeyVizMatrix": "yes",
        "GetAdapterSummary": "yes",
        "GetRouteDetail": "yes",
        "StreamEvents": "no",
    }
    clock.now += 59
    assert await cache.support(client, "a:1", 1.0) is first  # type: ignore[arg-type]
    assert client.calls == dict.fromkeys(PROBED_METHODS, 1)
    clock.now += 2
    await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert client.calls == dict.fromkeys(PROBED_METHODS, 2)


async def test_a_reconnected_node_is_probed_again_within_the_ttl():
    # A node that restarted (new connection: the client's epoch moved) may have gained
    # the method: its remembered "no" does not outlive the connection that said it.
    client = FakeClient({"StreamEvents": NodeError("UNIMPLEMENTED", "x")})
    clock = Clock()
    cache = SupportCache(ttl_s=60, clock=clock)
    await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert cache.cached(client, "a:1") is not None  # type: ignore[arg-type]
    client.errors = {}
    client.epochs["a:1"] = 1
    clock.now += 1
    assert cache.cached(client, "a:1") is None  # type: ignore[arg-type]
    again = await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert again.of("StreamEvents").support.value == "yes"
    assert client.calls == dict.fromkeys(PROBED_METHODS, 2)


async def test_an_unknown_answer_is_not_remembered():
    client = FakeClient({"GetAdapterSummary": NodeError("UNAUTHENTICATED", "token")})
    cache = SupportCache(ttl_s=60, clock=Clock())
    result = await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert not result.definitive
    await cache.support(client, "a:1", 1.0)  # type: ignore[arg-type]
    assert client.calls["GetAdapterSummary"] == 2


async def test_concurrent_page_loads_share_one_probe_per_node():
    client = FakeClient({})
    client.gate.clear()
    cache = SupportCache(ttl_s=60, clock=Clock())
    waiting = [asyncio.create_task(cache.support(client, "a:1", 1.0)) for _ in range(20)]  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    client.gate.set()
    results = await asyncio.gather(*waiting)
    assert all(r is results[0] for r in results)
    assert client.calls == dict.fromkeys(PROBED_METHODS, 1)


async def test_remembered_support_is_bounded_when_addresses_churn():
    # Membership is node-controlled: a seed may name new addresses on every refresh.
    cache = SupportCache(ttl_s=60.0)
    client = FakeClient({})
    for n in range(50):
        await cache.support(client, f"10.0.0.{n}:1", 1.0)  # type: ignore[arg-type]
    assert len(cache._cached) == client.capacity
    assert set(cache._cached) == {f"10.0.0.{n}:1" for n in range(46, 50)}
