"""Every cluster page and API endpoint against a 3-node devcluster, in both profiles,
compared with the nodes' own gRPC answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.test import AsyncClient

from devcluster import Op

pytestmark = pytest.mark.integration


@pytest.fixture(params=["upstream", "design"])
def profile(request):
    return request.param


def groups_as_tuples(groups: list[Any]) -> list[tuple[int, str | None, int]]:
    return [(g.raft_group_id, g.leader_node_id or None, g.leader_term) for g in groups]


async def test_overview_matches_the_nodes(devcluster_factory, portal, truth, parse_html, profile):
    cluster = devcluster_factory(profile=profile)
    cluster.transfer_leadership(2, "n3")
    t = truth(cluster)
    client = portal(cluster.addresses)

    response = await client.get("/api/cluster/overview")
    assert response.status_code == 200
    body = response.json()
    data = body["data"]
    views = {n.node_id: t.raft_groups(n.node_id) for n in cluster.nodes}
    catalog = t.list_routes()

    # Every node's own view equals the groups the portal reports.
    for groups in views.values():
        assert [(g["raft_group_id"], g["leader"], g["term"]) for g in data["groups"]] == (
            groups_as_tuples(groups)
        )
    assert all(not g["highlight"] for g in data["groups"])
    leaders = Counter(g.leader_node_id for g in views["n1"] if g.leader_node_id)
    assert data["summary"] == {
        "nodes_up": 3,
        "nodes_total": 3,
        "groups": len(views["n1"]),
        "groups_with_leader": sum(1 for g in views["n1"] if g.leader_node_id),
        "leaders": dict(sorted(leaders.items())),
        "routes": len(catalog.routes),
        "catalog_version": catalog.catalog_version,
    }
    assert data["summary"]["leaders"] == {"n1": 1, "n3": 2}
    assert [(n["node_id"], n["address"], n["reachable"], n["error"]) for n in data["nodes"]] == [
        (n.node_id, n.address, True, None) for n in cluster.nodes
    ]
    for node in data["nodes"]:
        assert node["rpcs"] == t.supports(node["node_id"])
        assert node["groups_reported"] == len(views[node["node_id"]])
        assert node["groups_led"] == leaders.get(node["node_id"], 0)
        assert node["latency_ms"] > 0
    expected_rpcs = "yes" if profile == "design" else "no"
    assert data["nodes"][0]["rpcs"]["GetAdapterSummary"] == expected_rpcs
    assert (body["nodes_responded"], body["nodes_total"]) == (3, 3)
    assert [s["ok"] for s in body["node_status"]] == [True, True, True]
    assert body["membership"]["source"] == cluster.node("n1").address

    page = await client.get("/")
    assert page.status_code == 200
    doc = parse_html(page.content.decode())
    assert not doc.has(data_testid="node-banner")
    assert doc.find(data_testid="responded").words == "3 of 3 nodes responded"
    assert doc.find(data_stat="nodes").find(class_="value").words == "3 / 3"
    assert doc.find(data_stat="groups").find(class_="value").words == str(len(views["n1"]))
    assert doc.find(data_stat="routes").find(class_="value").words == str(len(catalog.routes))
    assert doc.find(data_stat="catalog").find(class_="value").words == (
        f"v{catalog.catalog_version}"
    )
    rows = doc.find(id="nodes-table").find_all("tr", data_reachable="true")
    assert [r.attrs["data-node"] for r in rows] == ["n1", "n2", "n3"]
    for row in rows:
        pills = row.find(data_field="rpcs").find_all("span")
        shown = {
            p.attrs["data-rpc"]: p.attrs["data-support"] for p in pills if "data-rpc" in p.attrs
        }
        expected = t.supports(row.attrs["data-node"])
        del expected["GetRaftGroups"]
        assert shown == expected
    group_rows = [r for r in doc.find(id="groups-table").find_all("tr") if "data-group" in r.attrs]
    assert [
        (int(r.attrs["data-group"]), r.field("leader"), int(r.field("term"))) for r in group_rows
    ] == [(g.raft_group_id, g.leader_node_id, g.leader_term) for g in views["n2"]]


async def test_nodes_and_node_detail_match_the_nodes(
    devcluster_factory, portal, truth, parse_html, profile
):
    cluster = devcluster_factory(profile=profile)
    cluster.set_keyviz_enabled("n2", False)
    t = truth(cluster)
    client = portal(cluster.addresses)

    body = (await client.get("/api/nodes")).json()
    assert [n["node_id"] for n in body["data"]["nodes"]] == ["n1", "n2", "n3"]
    for node in body["data"]["nodes"]:
        assert node["rpcs"] == t.supports(node["node_id"])
    # A node without its sampler: KeyViz disabled on that node, not a failure.
    assert body["data"]["nodes"][1]["rpcs"]["GetKeyVizMatrix"] == "disabled"
    assert body["data"]["nodes"][1]["reachable"] is True

    doc = parse_html((await client.get("/nodes/")).content.decode())
    pill = doc.find(id="nodes-table").find("tr", data_node="n2").find(data_rpc="GetKeyVizMatrix")
    assert pill.attrs["data-support"] == "disabled"
    assert pill.words == "KeyViz off"
    assert pill.attrs["title"] == "KeyViz disabled on this node"

    own = t.raft_groups("n2")
    detail = (await client.get("/api/nodes/n2")).json()["data"]
    assert detail["node"]["address"] == cluster.node("n2").address
    assert [
        (g["raft_group_id"], g["leader"], g["term"], g["commit_index"], g["applied_index"])
        for g in detail["groups"]
    ] == [
        (g.raft_group_id, g.leader_node_id, g.leader_term, g.commit_index, g.applied_index)
        for g in own
    ]
    assert all(g["agrees_with_cluster"] for g in detail["groups"])
    # By address too: a node is found by id, else by address.
    by_address = (await client.get(f"/api/nodes/{cluster.node('n2').address}")).json()
    assert by_address["data"]["node"]["node_id"] == "n2"

    doc = parse_html((await client.get("/nodes/n2/")).content.decode())
    assert doc.find("h1").words == "Node n2"
    rows = [r for r in doc.find(id="node-groups-table").find_all("tr") if "data-group" in r.attrs]
    assert [
        (int(r.attrs["data-group"]), r.field("leader"), int(r.field("term")), r.field("commit"))
        for r in rows
    ] == [(g.raft_group_id, g.leader_node_id, g.leader_term, f"{g.commit_index:,}") for g in own]
    support = {
        r.attrs["data-rpc"]: next(
            e.attrs["data-support"] for e in r.find_all("span") if "data-support" in e.attrs
        )
        for r in doc.find(id="node-rpcs").find_all("tr")
        if "data-rpc" in r.attrs
    }
    assert support == t.supports("n2")


async def test_unknown_node_is_a_404_on_page_and_api(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    api = await client.get("/api/nodes/n9")
    assert api.status_code == 404
    assert api.json() == {
        "code": 404,
        "message": "no node 'n9' in the membership (known: n1, n2, n3)",
    }
    page = await client.get("/nodes/n9/")
    assert page.status_code == 404
    assert "No node n9 in the cluster's membership" in parse_html(page.content.decode()).words


async def test_raft_groups_match_every_nodes_answer(
    devcluster_factory, portal, truth, parse_html, profile
):
    cluster = devcluster_factory(profile=profile)
    cluster.inject([Op("n1", "write", b"user:1", size=10, count=7)])
    cluster.transfer_leadership(1, "n2")
    t = truth(cluster)
    client = portal(cluster.addresses)

    before_ms = _now_ms()
    body = (await client.get("/api/raft/groups")).json()
    after_ms = _now_ms()
    views = {
        n.node_id: {g.raft_group_id: g for g in t.raft_groups(n.node_id)} for n in cluster.nodes
    }
    groups = body["data"]["groups"]
    assert [g["raft_group_id"] for g in groups] == sorted(views["n1"])
    for group in groups:
        gid = group["raft_group_id"]
        leader = views["n1"][gid].leader_node_id
        assert (group["leader"], group["term"]) == (leader, views["n1"][gid].leader_term)
        assert not group["highlight"]
        assert [r["node"] for r in group["replicas"]] == ["n1", "n2", "n3"]
        for replica in group["replicas"]:
            own = views[replica["node"]][gid]
            assert (
                replica["leader"],
                replica["term"],
                replica["commit_index"],
                replica["applied_index"],
                replica["is_leader"],
            ) == (
                own.leader_node_id,
                own.leader_term,
                own.commit_index,
                own.applied_index,
                replica["node"] == leader,
            )
            assert replica["lag"] == views[leader][gid].applied_index - own.applied_index
            if replica["node"] == leader:  # the leader hears no heartbeat: 0 on the wire
                assert own.last_contact_unix_ms == 0
                assert replica["last_contact_unix_ms"] is None
                assert replica["last_contact_age_ms"] is None
            else:
                assert before_ms - 1000 <= replica["last_contact_unix_ms"] <= after_ms
    # The injected writes moved the commit index of the group owning user:1.
    owner = cluster.route_for_key(b"user:1").group_id
    commits = {g["raft_group_id"]: g["replicas"][0]["commit_index"] for g in groups}
    assert commits[owner] > max(c for gid, c in commits.items() if gid != owner)

    doc = parse_html((await client.get("/raft/")).content.decode())
    table = doc.find(id="raft-table")
    for gid, own_view in views["n1"].items():
        body_el = table.find("tbody", data_group=str(gid))
        assert "highlight" not in body_el.attrs.get("class", "")
        assert body_el.field("leader") == own_view.leader_node_id
        assert body_el.field("term") == str(own_view.leader_term)
        for row in body_el.find_all("tr"):
            node = row.attrs["data-node"]
            own = views[node][gid]
            assert row.field("commit") == f"{own.commit_index:,}"
            assert row.field("applied") == f"{own.applied_index:,}"
            assert row.field("lag") == "0"
            if node == own_view.leader_node_id:  # a leader hears no heartbeat: it is the leader
                assert row.field("contact") == "leader"
            else:
                assert row.field("contact").endswith("ago")


async def test_a_group_without_a_leader_is_highlighted(
    devcluster_factory, portal, truth, parse_html
):
    cluster = devcluster_factory()
    cluster.stop_node("n2")
    cluster.stop_node("n3")  # no quorum: every group loses its leader
    t = truth(cluster)
    client = portal(cluster.addresses)
    own = t.raft_groups("n1")
    assert all(not g.leader_node_id for g in own)

    groups = (await client.get("/api/raft/groups")).json()["data"]["groups"]
    assert [(g["raft_group_id"], g["leader"], g["highlight"]) for g in groups] == [
        (g.raft_group_id, None, True) for g in own
    ]
    assert all(r["lag"] is None for g in groups for r in g["replicas"])
    doc = parse_html((await client.get("/raft/")).content.decode())
    for g in own:
        tbody = doc.find(id="raft-table").find("tbody", data_group=str(g.raft_group_id))
        assert tbody.attrs["class"] == "highlight"
        assert tbody.field("leader") == "no leader"
        assert tbody.field("lag") == "unknown"
    overview = parse_html((await client.get("/")).content.decode())
    assert overview.find(data_stat="led").find(class_="value").words == f"0 / {len(own)}"


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


async def test_routes_match_list_routes(devcluster_factory, portal, truth, parse_html, profile):
    cluster = devcluster_factory(profile=profile)
    user_route = cluster.route_for_key(b"user:1")
    left, right = cluster.split_route(user_route.route_id, b"user:m")
    t = truth(cluster)
    client = portal(cluster.addresses)
    catalog = t.list_routes("n2")
    leaders = {g.raft_group_id: g.leader_node_id for g in t.raft_groups("n1")}

    body = (await client.get("/api/routes")).json()
    data = body["data"]
    assert data["catalog"]["version"] == catalog.catalog_version
    assert data["catalog"]["source"] == "n1"
    assert data["matched"] == len(catalog.routes)
    assert [
        (
            r["route_id"],
            r["start"]["hex"],
            r["end"]["hex"],
            r["raft_group_id"],
            r["leader"],
            r["state"],
            r["parent_route_id"],
            r["split_at_hlc"],
        )
        for r in data["routes"]
    ] == [
        (
            r.route_id,
            r.start.hex(),
            r.end.hex(),
            r.raft_group_id,
            leaders[r.raft_group_id],
            "active",
            r.parent_route_id,
            r.split_at_hlc,
        )
        for r in sorted(catalog.routes, key=lambda r: r.start)
    ]
    by_id = {r["route_id"]: r for r in data["routes"]}
    assert by_id[left]["parent_route_id"] == user_route.route_id
    assert by_id[left]["split_at_hlc"] > 0
    first, last = data["routes"][0], data["routes"][-1]
    assert first["start"]["preview"] == "-inf"
    assert first["start"]["infinite"]
    assert last["end"]["preview"] == "+inf"
    txn = next(r for r in data["routes"] if r["start"]["hex"] == b"!txn|".hex())
    assert (txn["start"]["reserved_prefix"], txn["start"]["reserved_label"]) == (
        "!txn|",
        "transaction metadata",
    )
    assert (txn["start"]["label"], txn["start"]["family"]) == ("transaction records", "txn")
    binary = next(r for r in data["routes"] if r["start"]["hex"] == "80")
    assert (binary["start"]["preview"], binary["start"]["is_hex"]) == ("0x80", True)

    # Filters and sort, against the catalog the node returned.
    body = (await client.get("/api/routes", {"prefix": "user:", "sort": "-route"})).json()
    expected = sorted(
        (
            r.route_id
            for r in catalog.routes
            if r.start < b"user;" and (not r.end or r.end > b"user:")
        ),
        reverse=True,
    )
    assert [r["route_id"] for r in body["data"]["routes"]] == expected == [right, left]
    group = catalog.routes[0].raft_group_id
    body = (await client.get("/api/routes", {"group": str(group), "sort": "start"})).json()
    assert [r["route_id"] for r in body["data"]["routes"]] == [
        r.route_id
        for r in sorted(catalog.routes, key=lambda r: r.start)
        if r.raft_group_id == group
    ]
    body = (await client.get("/api/routes", {"prefix": "0x80"})).json()
    assert [r["route_id"] for r in body["data"]["routes"]] == [
        r.route_id for r in catalog.routes if r.start >= b"\x80"
    ]

    doc = parse_html((await client.get("/routes/", {"prefix": "user:"})).content.decode())
    rows = [r for r in doc.find(id="routes-table").find_all("tr") if "data-route" in r.attrs]
    assert [int(r.attrs["data-route"]) for r in rows] == [left, right]
    assert rows[0].find(data_field="start").attrs["data-hex"] == b"user:".hex()
    assert rows[0].field("start") == "user:"
    assert rows[0].field("end") == "user:m"
    assert rows[1].field("end") == "0x80"
    assert rows[0].field("leader") == leaders[by_id[left]["raft_group_id"]]
    assert rows[0].field("parent") == str(user_route.route_id)
    assert doc.find(id="catalog-line").field("matched") == "2"
    full = parse_html((await client.get("/routes/")).content.decode())
    txn_row = next(
        r
        for r in full.find(id="routes-table").find_all("tr")
        if r.find_all(data_hex=b"!txn|".hex(), data_field="start")
    )
    # Read by its family; the raw key one hover away.
    label = txn_row.find(data_field="start").find("span", class_="label")
    assert (label.words, label.attrs["title"]) == ("transaction records", "!txn|")
    assert full.find(id="routes-table").find_all("tr")[1].field("start") == "-inf"


async def test_adapters_merge_the_nodes_summaries(
    devcluster_factory, portal, truth, parse_html, profile
):
    cluster = devcluster_factory(profile=profile)
    ops = [
        Op("n1", "write", b"user:1", size=100, adapter="redis", count=4, latency_ns=2_000_000),
        Op("n2", "read", b"user:1", size=50, adapter="redis", count=3, latency_ns=1_000_000),
        Op("n3", "read", b"item:9", size=10, adapter="dynamo", count=2, follower_local=True),
    ]
    cluster.inject(ops)
    t = truth(cluster)
    client = portal(cluster.addresses)
    body = (await client.get("/api/adapters/summary")).json()
    data = body["data"]
    page = parse_html((await client.get("/adapters/")).content.decode())

    if profile == "upstream":
        assert data["supported"] is False
        assert data["summaries"] == []
        assert [s["state"] for s in data["sources"]] == ["unsupported"] * 3
        assert page.has(data_testid="adapters-unsupported")
        assert "does not provide per-adapter request statistics" in page.words
        assert not page.has(data_testid="node-banner")  # unsupported is not a failure
        return

    per_node = {
        n.node_id: list(t.admin(n.node_id, "GetAdapterSummary").summaries) for n in cluster.nodes
    }
    keys = sorted({(s.adapter, s.operation) for v in per_node.values() for s in v})
    assert [(r["adapter"], r["operation"]) for r in data["summaries"]] == keys
    assert len(keys) >= 2
    for row in data["summaries"]:
        mine = {
            node: s
            for node, summaries in per_node.items()
            for s in summaries
            if (s.adapter, s.operation) == (row["adapter"], row["operation"])
        }
        assert row["requests"] == sum(s.requests for s in mine.values())
        assert row["bytes_in"] == sum(s.bytes_in for s in mine.values())
        assert row["bytes_out"] == sum(s.bytes_out for s in mine.values())
        assert [
            (q["node"], q["p50_ns"], q["p95_ns"], q["p99_ns"], q["requests"])
            for q in row["per_node"]
        ] == [(node, s.p50_ns, s.p95_ns, s.p99_ns, s.requests) for node, s in mine.items()]
    assert sum(r["requests"] for r in data["summaries"]) == 9
    assert data["supported"] is True

    table = page.find(id="adapters-table")
    for row in data["summaries"]:
        tbody = table.find("tbody", data_adapter=row["adapter"], data_operation=row["operation"])
        total = tbody.find("tr", class_="total")
        assert total.field("requests") == f"{row['requests']:,}"
        for q in row["per_node"]:
            sub = tbody.find("tr", data_node=q["node"])
            assert sub.field("requests") == f"{q['requests']:,}"
            assert sub.field("p50") == f"{q['p50_ns'] / 1e6:.2f} ms"


async def test_htmx_refresh_renders_only_the_live_region(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    for url in ("/", "/nodes/", "/nodes/n1/", "/raft/", "/routes/?group=1", "/adapters/"):
        full = await client.get(url)
        partial = await client.get(url, headers={"HX-Request": "true", "HX-Target": "live"})
        assert full.status_code == partial.status_code == 200
        assert "HX-Request" in full["Vary"]
        assert "HX-Request" in partial["Vary"]
        assert "no-cache" in full["Cache-Control"]
        assert full.content.decode().startswith("<!doctype html>")
        live = partial.content.decode().strip()
        assert live.startswith('<div id="live" class="live" hx-get="' + url.replace("&", "&amp;"))
        assert 'hx-trigger="every 5s"' in live
        assert "<html" not in live
        doc = parse_html(live)
        assert doc.find(data_testid="responded").words == "3 of 3 nodes responded"
        # A link elsewhere on the page (hx-target=body) gets the whole page.
        other = await client.get(url, headers={"HX-Request": "true", "HX-Target": ""})
        assert other.content.decode().startswith("<!doctype html>")


async def test_api_refuses_bad_parameters_naming_them(devcluster_factory, portal):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    cases = {
        "group=abc": "group: must be a Raft group id (a whole number from 1), got 'abc'",
        "prefix=0xabc": "prefix: hex needs two digits per byte, got 3 digits in '0xabc'",
        "sort=size": "sort: must be one of start, route, group, leader, state, parent, "
        "split_hlc (with - for descending), got 'size'",
    }
    for query, message in cases.items():
        response = await client.get(f"/api/routes?{query}")
        assert response.status_code == 400
        assert response.json() == {"code": 400, "message": message}


async def test_routes_page_shows_bad_filters_and_still_renders(
    devcluster_factory, portal, truth, parse_html
):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    response = await client.get("/routes/", {"group": "abc", "prefix": "user:"})
    assert response.status_code == 200
    doc = parse_html(response.content.decode())
    errors = doc.find(data_testid="form-errors")
    assert errors.find("li", data_param="group").words == (
        "group: must be a Raft group id (a whole number from 1), got 'abc'"
    )
    # The good filter still applies.
    catalog = truth(cluster).list_routes()
    rows = [r for r in doc.find(id="routes-table").find_all("tr") if "data-route" in r.attrs]
    assert [int(r.attrs["data-route"]) for r in rows] == [
        r.route_id for r in catalog.routes if r.start < b"user;" and (not r.end or r.end > b"user:")
    ]
    assert doc.find("input", name="prefix").attrs["value"] == "user:"


async def test_api_is_get_only_and_needs_a_signed_in_caller(devcluster_factory, portal):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    post = await client.post("/api/cluster/overview")
    assert post.status_code == 405
    assert post.json()["code"] == 405
    assert post["Allow"] == "GET, HEAD"
    anonymous = await AsyncClient().get("/api/nodes")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == 401
    # Authentication replaced the early loopback-only rule: any address may call it.
    remote = await from_address(client, "10.1.2.3", "/api/nodes")
    assert remote.status_code == 200


async def from_address(client: AsyncClient, address: str, path: str) -> Any:
    """A GET whose ASGI scope names another client address (REMOTE_ADDR)."""
    return await client.request(
        method="GET",
        path=path,
        query_string="",
        headers=[(b"host", b"testserver")],
        client=[address, 40000],
    )
