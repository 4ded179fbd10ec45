"""The node client, fan-out and discovery against a real-gRPC devcluster."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest

from cluster.client import NodeClient, NodeError
from cluster.discovery import Discovery, members_from_overview
from cluster.fanout import WAITING, Node, NodeStatus, PageBudget, fan_out
from cluster.tokens import NodeTokenStore, TokenFileError, read_token_file
from devcluster.pytest_plugin import TEST_TOKEN
from elastickv_admin.lib.config import PortalConfig
from proto import admin_pb2

pytestmark = pytest.mark.integration

DEAD = "127.0.0.1:1"


def make_client(
    token: str | None = TEST_TOKEN, next_token: str | None = None, **config: object
) -> NodeClient:
    return NodeClient(PortalConfig(**config), NodeTokenStore(token, next_token))  # type: ignore[arg-type]


def nodes_of(cluster) -> list[Node]:
    return [Node(n.node_id, n.address) for n in cluster.nodes]


async def test_call_returns_the_nodes_own_answer(devcluster):
    client = make_client()
    overview = await client.call(devcluster.node("n2").address, "GetClusterOverview")
    assert overview.self.node_id == "n2"
    assert sorted(m.node_id for m in overview.members) == ["n1", "n3"]
    await client.close()


async def test_slow_node_fails_at_its_deadline_and_fan_out_costs_one_deadline(devcluster):
    devcluster.set_fault("n2", delay_s=3.0)
    client = make_client(rpc_timeout_s=0.5)
    started = time.monotonic()
    result = await fan_out(client, nodes_of(devcluster), "GetRaftGroups")
    elapsed = time.monotonic() - started
    assert result.responded == 2
    [failed] = result.failed
    assert (failed.node, failed.code) == ("n2", "DEADLINE_EXCEEDED")
    assert failed.error == "no answer to GetRaftGroups within 0.5 s"
    assert elapsed < 1.5  # one deadline, not the sum of three calls
    await client.close()


async def test_response_over_the_receive_cap_is_a_per_node_error(devcluster):
    devcluster.set_fault("n3", oversized=200_000)
    client = make_client(max_receive_bytes=100_000)
    result = await fan_out(client, nodes_of(devcluster), "GetRaftGroups")
    [failed] = result.failed
    assert failed.code == "OVERSIZED"
    assert "larger than the" in (failed.error or "")
    assert sorted(result.results) == sorted(
        [devcluster.node("n1").address, devcluster.node("n2").address]
    )
    await client.close()


async def test_wrong_token_is_unauthenticated_with_the_nodes_reason_and_no_secret(devcluster):
    client = make_client(token="not-the-token")
    with pytest.raises(NodeError) as err:
        await client.call(devcluster.node("n1").address, "GetRaftGroups")
    assert err.value.code == "UNAUTHENTICATED"
    assert err.value.message == "the node rejected the portal's token (invalid admin token)"
    assert "not-the-token" not in repr(client.tokens.candidates("x"))
    await client.close()


async def test_rotation_falls_back_to_next_and_remembers_which_token_each_node_accepts(devcluster):
    address = devcluster.node("n1").address
    devcluster.set_node_token("n1", "the-next-token")
    client = make_client(token=TEST_TOKEN, next_token="the-next-token")
    overview = await client.call(address, "GetClusterOverview")
    assert overview.self.node_id == "n1"
    assert client.tokens.accepted_label(address) == "next"
    assert [t.label for t in client.tokens.candidates(address)] == ["next", "current"]
    # n2 still holds the current token.
    await client.call(devcluster.node("n2").address, "GetClusterOverview")
    assert client.tokens.accepted_label(devcluster.node("n2").address) == "current"
    # The remembered token is tried first: one call per request, no UNAUTHENTICATED detour.
    devcluster.reset_rpc_counts()
    for _ in range(3):
        await client.call(address, "GetRaftGroups")
    assert devcluster.rpc_counts("n1") == {"GetRaftGroups": 3}
    await client.close()


async def test_unimplemented_is_remembered_per_node_and_method(devcluster):
    address = devcluster.node("n1").address
    client = make_client()
    with pytest.raises(NodeError) as first:
        await client.call(address, "GetAdapterSummary")
    assert first.value.code == "UNIMPLEMENTED"
    assert first.value.message == "GetAdapterSummary is not supported by this node"
    assert not first.value.cached
    devcluster.reset_rpc_counts()
    with pytest.raises(NodeError) as second:
        await client.call(address, "GetAdapterSummary")
    assert second.value.cached
    assert devcluster.rpc_counts("n1") == {}
    # Other methods on the same node are unaffected.
    await client.call(address, "GetRaftGroups")
    await client.close()


async def test_node_without_admin_registered_is_not_supported(devcluster):
    devcluster.set_admin_registered("n3", False)
    client = make_client()
    result = await fan_out(client, nodes_of(devcluster), "GetClusterOverview")
    [failed] = result.failed
    assert (failed.node, failed.code) == ("n3", "UNIMPLEMENTED")
    # Distribution stays available on it.
    routes = await client.call(devcluster.node("n3").address, "ListRoutes")
    assert len(routes.routes) == 8
    await client.close()


async def test_stopped_node_is_unreachable(devcluster):
    devcluster.stop_node("n2")
    client = make_client(rpc_timeout_s=2.0)
    result = await fan_out(client, nodes_of(devcluster), "GetRaftGroups")
    [failed] = result.failed
    assert (failed.node, failed.code) == ("n2", "UNAVAILABLE")
    assert (failed.error or "").startswith("unreachable:")
    await client.close()


async def test_keyviz_unavailable_reads_as_keyviz_disabled(devcluster):
    devcluster.set_keyviz_enabled("n1", False)
    client = make_client()
    with pytest.raises(NodeError) as err:
        await client.call(
            devcluster.node("n1").address, "GetKeyVizMatrix", admin_pb2.GetKeyVizMatrixRequest()
        )
    assert err.value.code == "UNAVAILABLE"
    assert err.value.message.startswith("KeyViz disabled on this node")
    await client.close()


async def test_a_failure_says_in_fields_whether_the_node_answered_and_in_its_own_words(
    devcluster,
):
    """Code that decides reads NodeError's fields, never its wording: a dead address and a
    deadline are unreachable; a node refusing (wrong token, sampler off) answered, and its
    own words are the detail."""
    devcluster.set_keyviz_enabled("n1", False)
    devcluster.set_fault("n2", delay_s=3.0)
    client = make_client(rpc_timeout_s=0.5)
    wrong = make_client(token="not-the-token")
    failures = {}
    for name, call in {
        "dead": client.call(DEAD, "GetRaftGroups"),
        "slow": client.call(devcluster.node("n2").address, "GetRaftGroups"),
        "keyviz off": client.call(
            devcluster.node("n1").address, "GetKeyVizMatrix", admin_pb2.GetKeyVizMatrixRequest()
        ),
        "token": wrong.call(devcluster.node("n3").address, "GetRaftGroups"),
    }.items():
        with pytest.raises(NodeError) as err:
            await call
        failures[name] = (err.value.code, err.value.reachable)
        if name == "token":
            assert err.value.detail == "invalid admin token"
    assert failures == {
        "dead": ("UNAVAILABLE", False),
        "slow": ("DEADLINE_EXCEEDED", False),
        "keyviz off": ("UNAVAILABLE", True),
        "token": ("UNAUTHENTICATED", True),
    }
    await client.close()
    await wrong.close()


async def test_distribution_is_called_without_a_token(devcluster):
    client = make_client(token=None)
    routes = await client.call(devcluster.node("n1").address, "ListRoutes")
    assert routes.catalog_version >= 1
    with pytest.raises(NodeError, match="rejected the portal's token"):
        await client.call(devcluster.node("n1").address, "GetRaftGroups")
    await client.close()


async def test_malformed_validation_fails_only_that_node(devcluster):
    from cluster.fanout import MalformedResponse

    def validate(resp: admin_pb2.GetClusterOverviewResponse) -> str:
        if resp.self.node_id == "n2":
            raise MalformedResponse("group_leaders not sorted")
        return str(resp.self.node_id)

    client = make_client()
    result = await fan_out(client, nodes_of(devcluster), "GetClusterOverview", validate=validate)
    assert sorted(result.results.values()) == ["n1", "n3"]
    [failed] = result.failed
    assert (failed.node, failed.code, failed.error) == (
        "n2",
        "MALFORMED",
        "malformed response: group_leaders not sorted",
    )
    await client.close()


def test_one_client_serves_several_event_loops(devcluster):
    # grpc.aio channels belong to the loop that made them; the client keeps one per loop.
    client = make_client()
    address = devcluster.node("n1").address

    async def ask() -> str:
        return str((await client.call(address, "GetClusterOverview")).self.node_id)

    assert asyncio.run(ask()) == "n1"
    assert asyncio.run(ask()) == "n1"


def test_token_file_rules(tmp_path):
    path = tmp_path / "token"
    path.write_text("  tok-en \n")
    assert read_token_file(path) == "tok-en"
    path.write_text(" \n")
    with pytest.raises(TokenFileError, match="is empty"):
        read_token_file(path)
    path.write_text("x" * 5000)
    with pytest.raises(TokenFileError, match="at most 4096"):
        read_token_file(path)


# --- discovery ---------------------------------------------------------------------------


def make_discovery(
    client: NodeClient, seeds: list[str], refresh: float = 60.0, cap: int = 512
) -> Discovery:
    return Discovery(client, seeds, refresh, cap)


async def test_discovery_skips_a_dead_seed_and_finds_every_node(devcluster):
    client = make_client(rpc_timeout_s=1.0)
    found = await make_discovery(client, [DEAD, devcluster.node("n2").address]).membership()
    assert found.source == devcluster.node("n2").address
    assert {(n.node_id, n.address) for n in found.nodes} == {
        (n.node_id, n.address) for n in devcluster.nodes
    }
    assert DEAD in found.seed_errors
    await client.close()


async def test_discovery_falls_back_to_the_seeds_when_none_answers():
    client = make_client(rpc_timeout_s=0.5)
    found = await make_discovery(client, [DEAD, "127.0.0.1:2"]).membership()
    assert found.source == ""
    assert [n.address for n in found.nodes] == [DEAD, "127.0.0.1:2"]
    assert set(found.seed_errors) == {DEAD, "127.0.0.1:2"}
    await client.close()


async def test_discovery_caps_the_node_count(devcluster_factory):
    cluster = devcluster_factory(nodes=5)
    client = make_client()
    found = await make_discovery(client, [cluster.node("n1").address], cap=3).membership()
    assert [n.node_id for n in found.nodes] == ["n1", "n2", "n3"]
    assert found.truncated == 2
    await client.close()


async def test_membership_follows_a_node_joining_after_invalidation(devcluster_factory):
    small = devcluster_factory(nodes=2)
    client = make_client()
    disc = make_discovery(client, [small.node("n1").address])
    assert [n.node_id for n in await disc.nodes()] == ["n1", "n2"]
    # Same seed list, but the cluster behind the seed is now 4 nodes: a join.
    big = devcluster_factory(nodes=4)
    disc.seeds = (big.node("n1").address,)
    assert [n.node_id for n in await disc.nodes()] == ["n1", "n2"]  # still cached
    disc.invalidate()
    assert [n.node_id for n in await disc.nodes()] == ["n1", "n2", "n3", "n4"]
    await client.close()


async def test_concurrent_loads_cause_one_overview_call_per_refresh_interval(devcluster):
    client = make_client()
    seeds = [devcluster.node("n1").address, devcluster.node("n2").address]
    disc = make_discovery(client, seeds, refresh=0.5)
    devcluster.reset_rpc_counts()
    results = await asyncio.gather(*(disc.nodes() for _ in range(50)))
    assert all(len(r) == 3 for r in results)
    assert devcluster.rpc_counts("n1").get("GetClusterOverview") == 1
    assert devcluster.rpc_counts("n2").get("GetClusterOverview") is None
    await asyncio.gather(*(disc.nodes() for _ in range(50)))
    assert devcluster.rpc_counts("n1").get("GetClusterOverview") == 1  # still within the interval
    await asyncio.sleep(0.6)
    await asyncio.gather(*(disc.nodes() for _ in range(50)))
    assert devcluster.rpc_counts("n1").get("GetClusterOverview") == 2
    await client.close()


def test_dedup_by_node_id_then_address_and_wildcard_hosts():
    response = admin_pb2.GetClusterOverviewResponse(
        self=admin_pb2.NodeIdentity(node_id="n1", grpc_address="0.0.0.0:50051"),
        members=[
            admin_pb2.NodeIdentity(node_id="n2", grpc_address="10.0.0.2:50051"),
            admin_pb2.NodeIdentity(node_id="n2", grpc_address="10.0.0.9:50051"),  # same id
            admin_pb2.NodeIdentity(node_id="n3", grpc_address="10.0.0.2:50051"),  # same address
            admin_pb2.NodeIdentity(node_id="n4", grpc_address=":50054"),  # wildcard host
            admin_pb2.NodeIdentity(node_id="n5", grpc_address=""),  # unknown address
        ],
    )
    nodes, truncated = members_from_overview(response, "seed.example:50051", cap=10)
    assert [(n.node_id, n.address) for n in nodes] == [
        ("n1", "seed.example:50051"),
        ("n2", "10.0.0.2:50051"),
        ("n4", "seed.example:50054"),
    ]
    assert truncated == 0


async def test_a_grpc_error_from_a_fault_keeps_its_code(devcluster):
    devcluster.set_fault("n1", error=grpc.StatusCode.INTERNAL, methods=["GetRaftGroups"])
    client = make_client()
    with pytest.raises(NodeError) as err:
        await client.call(devcluster.node("n1").address, "GetRaftGroups")
    assert err.value.code == "INTERNAL"
    assert "GetRaftGroups failed: INTERNAL" in err.value.message
    await client.close()


async def test_fan_out_leaves_a_node_slower_than_the_budget_waiting_and_skips_known_slow_ones(
    devcluster,
):
    """The page budget lives in fan_out: a node still silent when it runs out is "waiting"
    (its call cancelled), and a node the budget skips is never asked."""
    devcluster.set_fault("n2", delay_s=3.0)
    devcluster.reset_rpc_counts()
    client = make_client(rpc_timeout_s=5.0)
    budget = PageBudget(0.5, {devcluster.node("n3").address: "slow"})
    result = await fan_out(client, nodes_of(devcluster), "GetRaftGroups", budget=budget)
    by_node = {s.node: s for s in result.statuses}
    assert by_node["n1"].ok
    assert (by_node["n2"].code, by_node["n2"].state) == (WAITING, "waiting")
    assert by_node["n3"].code == WAITING
    assert by_node["n3"].error == "slow: not asked within the page's 0.5 s budget"
    assert devcluster.rpc_counts("n3").get("GetRaftGroups", 0) == 0
    assert sorted(result.results) == [devcluster.node("n1").address]
    await client.close()


async def test_fan_out_sends_each_node_its_own_request_and_runs_a_step_on_each_arrival(
    devcluster,
):
    """Per-node requests (the same node may be asked twice) and an on-arrival step that may
    turn an answer into a failure of that entry only."""
    client = make_client()
    n1, n2 = nodes_of(devcluster)[:2]
    requests = [
        admin_pb2.GetKeyVizMatrixRequest(series=admin_pb2.KEYVIZ_SERIES_READS, rows=1),
        admin_pb2.GetKeyVizMatrixRequest(series=admin_pb2.KEYVIZ_SERIES_WRITES, rows=2),
        admin_pb2.GetKeyVizMatrixRequest(series=admin_pb2.KEYVIZ_SERIES_WRITES, rows=3),
    ]
    arrived: list[tuple[str, int]] = []

    async def step(node: Node, answer: Any, status: NodeStatus) -> tuple[Any, NodeStatus]:
        arrived.append((node.node_id, len(answer.rows)))
        if node.node_id == "n2":
            return None, replace(status, ok=False, code="MALFORMED", error="rejected")
        return answer, status

    result = await fan_out(client, [n1, n1, n2], "GetKeyVizMatrix", requests, on_arrival=step)
    assert [s.ok for _, s in result.answers] == [True, True, False]
    assert sorted(node for node, _ in arrived) == ["n1", "n1", "n2"]
    assert [len(a.rows) if a is not None else None for a, _ in result.answers][2] is None
    await client.close()
