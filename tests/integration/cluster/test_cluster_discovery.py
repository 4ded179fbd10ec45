"""Membership as the pages see it: dead seeds, nodes joining and leaving, the cap, and a
crowd of viewers that must not multiply the calls a seed gets."""

from __future__ import annotations

import asyncio

import pytest

from proto import admin_pb2

pytestmark = pytest.mark.integration


async def test_a_dead_seed_is_skipped_and_named(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory()
    dead = "127.0.0.1:1"
    client = portal([dead, *cluster.addresses])
    body = (await client.get("/api/nodes")).json()
    assert [(n["node_id"], n["address"]) for n in body["data"]["nodes"]] == [
        (n.node_id, n.address) for n in cluster.nodes
    ]
    assert (body["nodes_responded"], body["nodes_total"]) == (3, 3)
    assert body["membership"]["source"] == cluster.addresses[0]
    assert list(body["membership"]["seed_errors"]) == [dead]
    assert body["membership"]["seed_errors"][dead].startswith("unreachable: ")
    doc = parse_html((await client.get("/")).content.decode())
    assert not doc.has(data_testid="node-banner")  # a dead seed is not a member
    assert doc.find(data_testid="seed-errors").words.startswith(f"seed {dead} did not answer")


async def test_nodes_joining_and_leaving_show_up_after_the_refresh_interval(
    devcluster_factory, portal, grpc_proxy
):
    cluster = devcluster_factory()
    members = {"n2"}  # what n1's Raft configuration lists besides itself

    def configured_members(answer: bytes) -> bytes:
        response = admin_pb2.GetClusterOverviewResponse.FromString(answer)
        kept = [m for m in response.members if m.node_id in members]
        del response.members[:]
        response.members.extend(kept)
        return response.SerializeToString()

    seed = grpc_proxy(cluster.addresses[0], {"GetClusterOverview": configured_members})
    interval = 0.6
    client = portal([seed.address], refresh_interval_s=interval)

    async def nodes() -> list[str]:
        return [n["node_id"] for n in (await client.get("/api/nodes")).json()["data"]["nodes"]]

    assert await nodes() == ["n1", "n2"]
    members.add("n3")  # n3 joins
    assert await nodes() == ["n1", "n2"]  # still cached
    await asyncio.sleep(interval + 0.05)
    assert await nodes() == ["n1", "n2", "n3"]
    members.discard("n2")  # n2 leaves
    await asyncio.sleep(interval + 0.05)
    body = (await client.get("/api/cluster/overview")).json()
    assert [n["node_id"] for n in body["data"]["nodes"]] == ["n1", "n3"]
    assert (body["nodes_responded"], body["nodes_total"]) == (2, 2)


async def test_the_cap_leaves_nodes_out_and_says_so(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory()
    client = portal(cluster.addresses, max_discovered_nodes=2)
    body = (await client.get("/api/nodes")).json()
    assert [n["node_id"] for n in body["data"]["nodes"]] == ["n1", "n2"]
    assert body["membership"]["truncated"] == 1
    doc = parse_html((await client.get("/nodes/")).content.decode())
    assert doc.find(data_testid="cap-banner").words == (
        "1 more node beyond the cap of 2 (--maxDiscoveredNodes) is not shown."
    )


async def test_fifty_concurrent_page_loads_ask_each_seed_once_per_refresh_interval(
    devcluster_factory, portal, grpc_proxy
):
    cluster = devcluster_factory()
    seeds = [grpc_proxy(address) for address in cluster.addresses]
    # Long enough that a burst of 50 signed-in page loads fits in one interval even on a
    # busy two-core machine; the second burst comes after the interval has surely passed.
    interval = 3.0
    client = portal([s.address for s in seeds], refresh_interval_s=interval)

    pages = await asyncio.gather(*(client.get("/") for _ in range(50)))
    assert {p.status_code for p in pages} == {200}
    assert all(b"3 of 3 nodes responded" in p.content for p in pages)
    assert [s.count("GetClusterOverview") for s in seeds] == [1, 0, 0]

    await asyncio.sleep(interval + 0.05)  # the membership is surely stale now
    pages = await asyncio.gather(*(client.get("/routes/") for _ in range(50)))
    assert {p.status_code for p in pages} == {200}
    assert [s.count("GetClusterOverview") for s in seeds] == [2, 0, 0]
    # Concurrent loads also share one health fan-out at a time, and the support probes
    # ran once per node for both bursts.
    assert seeds[0].count("GetRaftGroups") < 50
    assert seeds[0].count("GetAdapterSummary") == 1
