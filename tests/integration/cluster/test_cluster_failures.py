"""A failing node shows up as failed, with a reason an operator can act on, on every page
and endpoint, while everything the other nodes said is still shown correctly."""

from __future__ import annotations

import pytest

from devcluster import DevCluster
from proto import admin_pb2

pytestmark = pytest.mark.integration


def duplicate_first_group(answer: bytes) -> bytes:
    response = admin_pb2.GetRaftGroupsResponse.FromString(answer)
    response.groups.append(response.groups[0])
    return response.SerializeToString()


def break_node(kind: str, cluster: DevCluster, grpc_proxy) -> tuple[list[str], str, str]:
    """Make one node fail as ``kind``; returns (seeds, failed node, code)."""
    seeds = cluster.addresses
    if kind == "stopped":
        cluster.stop_node("n3")
        return seeds, "n3", "UNAVAILABLE"
    if kind == "slow":
        cluster.set_fault("n2", delay_s=3.0)
        return seeds, "n2", "DEADLINE_EXCEEDED"
    if kind == "wrong token":
        cluster.set_node_token("n3", "a-token-the-portal-does-not-have")
        return seeds, "n3", "UNAUTHENTICATED"
    if kind == "no admin":
        cluster.set_admin_registered("n3", False)
        return seeds, "n3", "UNIMPLEMENTED"
    if kind == "malformed":
        # n1 behind a proxy that lists a group twice in its GetRaftGroups answer; the
        # proxy is the first seed, so n1 is known at the proxy's address.
        proxy = grpc_proxy(seeds[0], {"GetRaftGroups": duplicate_first_group})
        return [proxy.address, *seeds[1:]], "n1", "MALFORMED"
    raise AssertionError(kind)


REASONS = {
    "stopped": "unreachable: ",
    "slow": "no answer to GetRaftGroups within 0.25 s",
    "wrong token": "the node rejected the portal's token (invalid admin token)",
    "no admin": "the node does not serve the Admin service (GetRaftGroups is UNIMPLEMENTED): "
    "was it started without --adminTokenFile or --adminInsecureNoAuth?",
    "malformed": "malformed response: GetRaftGroups lists group 1 twice",
}


@pytest.mark.parametrize("kind", list(REASONS))
async def test_a_failed_node_is_reported_and_the_rest_is_correct(
    kind, devcluster_factory, portal, truth, parse_html, grpc_proxy
):
    cluster = devcluster_factory(profile="design")
    seeds, failed, code = break_node(kind, cluster, grpc_proxy)
    t = truth(cluster)
    client = portal(seeds, rpc_timeout_s=0.25)
    healthy = [n.node_id for n in cluster.nodes if n.node_id != failed]
    views = {n: t.raft_groups(n) for n in healthy}
    catalog = t.list_routes(healthy[0])

    body = (await client.get("/api/cluster/overview")).json()
    assert (body["nodes_responded"], body["nodes_total"]) == (2, 3)
    statuses = {s["node"]: s for s in body["node_status"]}
    assert [s["node"] for s in body["node_status"]] == ["n1", "n2", "n3"]
    bad = statuses[failed]
    assert (bad["ok"], bad["code"]) == (False, code)
    assert bad["error"].startswith(REASONS[kind])
    assert all(statuses[n]["ok"] and statuses[n]["error"] is None for n in healthy)
    # Never a token in what the portal says.
    assert "devcluster-test-token" not in str(body)
    assert "does-not-have" not in str(body)

    data = body["data"]
    for node in healthy:
        assert [(g["raft_group_id"], g["leader"], g["term"]) for g in data["groups"]] == [
            (g.raft_group_id, g.leader_node_id, g.leader_term) for g in views[node]
        ]
    assert data["summary"]["nodes_up"] == 2
    assert data["summary"]["routes"] == len(catalog.routes)
    assert data["catalog"]["source"] == healthy[0]
    rows = {n["node_id"]: n for n in data["nodes"]}
    assert rows[failed]["reachable"] is False
    assert set(rows[failed]["rpcs"].values()) == {"no" if kind == "no admin" else "unknown"}
    for node in healthy:
        assert rows[node]["rpcs"] == t.supports(node)

    raft = (await client.get("/api/raft/groups")).json()["data"]["groups"]
    for group in raft:
        assert [r["node"] for r in group["replicas"]] == healthy
        own = {
            n: next(g for g in views[n] if g.raft_group_id == group["raft_group_id"])
            for n in healthy
        }
        assert [r["commit_index"] for r in group["replicas"]] == [
            own[n].commit_index for n in healthy
        ]
    if kind == "stopped":  # groups n3 led elected another leader (term + 1)
        assert {g["leader"] for g in raft} <= {"n1", "n2"}

    routes = (await client.get("/api/routes")).json()
    assert routes["nodes_responded"] == 2
    assert [r["route_id"] for r in routes["data"]["routes"]] == [
        r.route_id for r in sorted(catalog.routes, key=lambda r: r.start)
    ]

    for url in ("/", "/nodes/", "/raft/", "/routes/", "/adapters/", f"/nodes/{healthy[0]}/"):
        doc = parse_html((await client.get(url)).content.decode())
        banner = doc.find(data_testid="node-banner")
        assert banner.find("strong").words == "2 of 3 nodes responded."
        item = banner.find("li", data_node=failed)
        assert REASONS[kind].rstrip(": ") in item.words
        assert code in item.words
        assert doc.find(data_testid="responded").words == "2 of 3 nodes responded"

    overview = parse_html((await client.get("/")).content.decode())
    assert (
        overview.find(id="nodes-table").find("tr", data_node=failed).attrs["data-reachable"]
        == "false"
    )
    group_rows = [
        r for r in overview.find(id="groups-table").find_all("tr") if "data-group" in r.attrs
    ]
    assert [(r.field("leader"), r.field("term")) for r in group_rows] == [
        (g.leader_node_id, str(g.leader_term)) for g in views[healthy[0]]
    ]

    adapters = (await client.get("/api/adapters/summary")).json()["data"]
    sources = {s["node"]: s for s in adapters["sources"]}
    assert sources[failed]["state"] == "failed"
    assert sources[failed]["error"].startswith(REASONS[kind])
    assert all(sources[n]["state"] == "ok" for n in healthy)


async def test_an_unreachable_node_invalidates_membership_at_most_once_per_window(
    devcluster_factory, portal, grpc_proxy
):
    cluster = devcluster_factory()
    seed = grpc_proxy(cluster.addresses[0])
    cluster.stop_node("n3")
    client = portal([seed.address], refresh_interval_s=60)
    for _ in range(5):
        body = (await client.get("/api/nodes")).json()
        assert body["nodes_responded"] == 2
    # The first UNAVAILABLE drops the membership cache (one more GetClusterOverview); the
    # next page loads find n3 remembered as unavailable and leave the cache alone.
    assert seed.count("GetClusterOverview") == 2


async def test_no_seed_answering_falls_back_to_the_seeds(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory()
    cluster.set_node_token("n1", "other")
    client = portal([cluster.addresses[0]])
    body = (await client.get("/api/cluster/overview")).json()
    assert body["membership"]["source"] is None
    assert body["membership"]["seed_errors"] == {
        cluster.addresses[0]: "the node rejected the portal's token (invalid admin token)"
    }
    assert [s["node"] for s in body["node_status"]] == [cluster.addresses[0]]
    doc = parse_html((await client.get("/")).content.decode())
    assert "No seed answered GetClusterOverview" in doc.find(data_testid="seed-banner").words
    assert doc.has(data_testid="node-banner")


async def test_slow_nodes_cost_one_deadline_not_the_sum(devcluster_factory, portal):
    import time

    from cluster.runtime import discovery

    cluster = devcluster_factory(nodes=5)
    slow = ["n2", "n3", "n4", "n5"]
    for node in slow:
        cluster.set_fault(node, delay_s=3.0, methods={"GetRaftGroups"})
    client = portal(cluster.addresses, rpc_timeout_s=0.3)
    await discovery().membership()  # time the fan-out, not the first membership refresh
    started = time.perf_counter()
    body = (await client.get("/api/raft/groups")).json()
    elapsed = time.perf_counter() - started
    assert body["nodes_responded"] == 1
    assert [s["code"] for s in body["node_status"]] == [None] + ["DEADLINE_EXCEEDED"] * 4
    assert elapsed < 0.3 * len(slow) * 0.75  # in parallel: one deadline, far from the sum
