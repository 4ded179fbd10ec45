"""Issue #15: the cluster pages tell the truth under failure (DESIGN.md "Truth under failure").

Against a devcluster: every node down, one node killed then restarted, one slow node, Admin
unregistered then registered, KeyViz off then on, an insecure node, a wrong token. Each test
checks the rendered page and the JSON API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from devcluster import Op

pytestmark = pytest.mark.integration

LIVE = {"HX-Request": "true", "HX-Target": "live"}


async def eventually(fetch: Any, done: Any, attempts: int = 60, pause_s: float = 0.25) -> Any:
    """Fetch until ``done(result)``: for what the portal learns in the background (a late
    answer, a reconnect); fails with the last result."""
    result = None
    for _ in range(attempts):
        result = await fetch()
        if done(result):
            return result
        await asyncio.sleep(pause_s)
    raise AssertionError(f"never happened; last: {result}")


async def api(client: AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.content[:300]
    return response.json()


def statuses(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["node"]: s for s in body["node_status"]}


def replicas(raft: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    return {
        (g["raft_group_id"], r["node"]): r for g in raft["data"]["groups"] for r in g["replicas"]
    }


# -- 1. every node down: the last-known membership, with last seen ---------------------------


async def test_all_nodes_down_shows_the_last_known_members_not_the_seeds(
    devcluster_factory, portal, truth, parse_html
):
    cluster = devcluster_factory(profile="design")
    t = truth(cluster)
    # Only n1 is a seed: the old fallback would have shown "0 of 1".
    client = portal([cluster.addresses[0]])
    before = await api(client, "/api/cluster/overview")
    assert (before["nodes_responded"], before["nodes_total"]) == (3, 3)
    known = {
        n.node_id: {g.raft_group_id: g for g in t.raft_groups(n.node_id)} for n in cluster.nodes
    }
    for node in cluster.nodes:
        cluster.stop_node(node.node_id)

    body = await eventually(
        lambda: api(client, "/api/cluster/overview"), lambda b: b["membership"]["last_known"]
    )
    assert (body["nodes_responded"], body["nodes_total"]) == (0, 3)
    assert body["membership"]["confirmed_at_ms"] <= body["generated_at_ms"]
    assert [s["node"] for s in body["node_status"]] == ["n1", "n2", "n3"]
    for s in body["node_status"]:
        assert (s["ok"], s["state"], s["code"]) == (False, "down", "UNAVAILABLE")
        assert s["last_seen_ms"] is not None
    # One cause for all three, with its next step; no raw gRPC text outside "detail".
    [problem] = body["problems"]
    assert problem["cause"] == "refused"
    assert "is the node running" in problem["next_step"]
    assert [a["node"] for a in problem["nodes"]] == ["n1", "n2", "n3"]

    doc = parse_html((await client.get("/")).content.decode())
    banner = doc.find(data_testid="node-banner")
    assert banner.find("strong").words == "0 of 3 nodes responded."
    assert "members a seed last named" in banner.find(data_testid="last-known").words
    for node in ("n1", "n2", "n3"):
        assert "last seen 20" in banner.find(data_affected=node).words  # a date, not "never"
    assert "last-known membership of 3 nodes" in doc.find(data_testid="seed-banner").words

    # The Raft page keeps every replica, unreachable since its last answer, last known state.
    raft = await api(client, "/api/raft/groups")
    rows = replicas(raft)
    assert {(gid, n) for (gid, n) in rows} == {(gid, n) for n in known for gid in known[n]}
    for (gid, node), r in rows.items():
        assert r["reachable"] is False
        assert r["unreachable_since_ms"] is not None
        assert r["commit_index"] == known[node][gid].commit_index
        assert r["applied_index"] == known[node][gid].applied_index
    page = parse_html((await client.get("/raft/")).content.decode())
    for row in page.find(id="raft-table").find_all("tr", data_reachable="false"):
        assert row.field("unreachable").startswith("unreachable since 20")
    assert len(page.find(id="raft-table").find_all("tr", data_reachable="false")) == len(rows)


# -- 1 + 3 + 4. one node killed, then restarted ----------------------------------------------


async def test_a_killed_node_keeps_its_replicas_and_comes_back_when_restarted(
    devcluster_factory, portal, truth, parse_html
):
    cluster = devcluster_factory(profile="design")
    t = truth(cluster)
    client = portal(cluster.addresses)
    await api(client, "/api/raft/groups")
    n3 = {g.raft_group_id: g for g in t.raft_groups("n3")}
    cluster.stop_node("n3")

    body = await api(client, "/api/raft/groups")
    st = statuses(body)["n3"]
    assert (st["ok"], st["code"], st["state"]) == (False, "UNAVAILABLE", "down")
    rows = replicas(body)
    for gid, g in n3.items():
        r = rows[(gid, "n3")]
        assert (r["reachable"], r["commit_index"]) == (False, g.commit_index)
    assert all(r["reachable"] for (_, n), r in rows.items() if n != "n3")

    html = (await client.get("/raft/")).content.decode()
    doc = parse_html(html)
    # The cause and the next step once; the node's raw words once, behind a disclosure.
    banner = doc.find(data_testid="node-banner")
    [cause] = banner.find_all("li", data_cause="refused")
    assert "Connection refused on n3" in cause.words
    assert "is the node running" in cause.find(data_testid="next-step").words
    raw = cause.find("details").find("li", data_node="n3").words
    assert "unreachable" in raw
    snippet = raw.split(": ", 1)[1][:60]
    assert html.count(snippet) == 1
    # The node's own page too: the cause and the next step, its raw words once.
    detail_html = (await client.get("/nodes/n3/")).content.decode()
    detail = parse_html(detail_html)
    assert detail.find(id="node-facts").field("status") == (
        "down Connection refused: is the node running, and is its --address reachable "
        "from the portal?"
    )
    assert detail.find(id="node-facts").field("last-seen").startswith("20")
    assert detail_html.count(snippet) == 1

    cluster.start_node("n3")
    back = await eventually(
        lambda: api(client, "/api/raft/groups"), lambda b: statuses(b)["n3"]["ok"]
    )
    assert statuses(back)["n3"]["state"] == "up"
    assert back["problems"] == []
    assert all(r["reachable"] for r in replicas(back).values())
    doc = parse_html((await client.get("/")).content.decode())
    assert not doc.has(data_testid="node-banner")
    assert doc.find(id="nodes-table").find("tr", data_node="n3").field("status") == "up"


# -- 2. one slow node: the page does not wait for it ------------------------------------------


async def test_a_slow_node_is_waited_for_only_up_to_the_budget_then_filled_in(
    devcluster_factory, portal, truth, parse_html
):
    cluster = devcluster_factory(profile="design")
    t = truth(cluster)
    n2 = {g.raft_group_id: g for g in t.raft_groups("n2")}
    cluster.set_fault("n2", delay_s=3.0, methods={"GetRaftGroups"})
    client = portal(cluster.addresses, rpc_timeout_s=5.0, page_budget_s=1.0, slow_node_s=1.5)

    response = await client.get("/")
    doc = parse_html(response.content.decode())
    row = doc.find(id="nodes-table").find("tr", data_node="n2")
    assert row.find(data_field="status").attrs["data-state"] == "waiting"
    assert "n2" in doc.find(data_testid="waiting-banner").words
    assert not doc.has(data_testid="node-banner")  # waiting is not a failure
    live = doc.find(id="live")
    assert live.attrs["hx-trigger"].startswith("load delay:")  # it asks again soon
    assert doc.find(data_testid="live-mode").words == "filling in late answers…"
    for node in ("n1", "n3"):
        assert doc.find(id="nodes-table").find("tr", data_node=node).field("status") == "up"

    first = await api(client, "/api/raft/groups")
    assert first["nodes_waiting"] == ["n2"]
    assert statuses(first)["n2"]["code"] == "WAITING"
    assert {n for (_, n) in replicas(first)} == {"n1", "n3"}

    # Its answer arrives in the background and shows on a later request, marked slow.
    later = await eventually(
        lambda: api(client, "/api/nodes"),
        lambda b: statuses(b)["n2"]["state"] == "slow",
    )
    row_json = next(n for n in later["data"]["nodes"] if n["node_id"] == "n2")
    assert row_json["reachable"] is True
    assert row_json["latency_ms"] > 1500  # what makes it "slow": over the threshold
    assert row_json["last_seen_ms"] is not None
    raft = await api(client, "/api/raft/groups")
    rows = replicas(raft)
    for gid, g in n2.items():
        assert rows[(gid, "n2")]["commit_index"] == g.commit_index
    page = parse_html((await client.get("/", headers=LIVE)).content.decode())
    cell = page.find(id="nodes-table").find("tr", data_node="n2").find(data_field="status")
    assert cell.attrs["data-state"] == "slow"
    assert cell.find("span").words == "slow"
    assert page.find(id="live").attrs["hx-trigger"] == "every 5s"


async def test_a_slow_node_does_not_hold_the_adapters_page_past_its_budget(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory(profile="design")
    # Slow on every method: asking it GetAdapterSummary would cost the page 3 s.
    cluster.set_fault("n2", delay_s=3.0)
    client = portal(cluster.addresses, rpc_timeout_s=5.0, page_budget_s=1.0, slow_node_s=1.5)
    await client.get("/")  # its health answer arrives later, marked slow
    await eventually(
        lambda: api(client, "/api/nodes"),
        lambda b: statuses(b)["n2"]["state"] == "slow",
    )
    cluster.reset_rpc_counts()
    body = await api(client, "/api/adapters/summary")
    sources = {s["node"]: s for s in body["data"]["sources"]}
    assert sources["n2"]["state"] == "waiting"
    assert "not asked within the page's 1 s budget" in sources["n2"]["error"]
    assert {sources[n]["state"] for n in ("n1", "n3")} == {"ok"}
    assert cluster.rpc_counts("n2").get("GetAdapterSummary", 0) == 0
    page = parse_html((await client.get("/adapters/")).content.decode())
    assert "n2" in page.find(data_testid="adapters-waiting").words


# -- 3. a fixed node is re-checked at once ----------------------------------------------------


async def test_admin_registered_again_is_seen_without_waiting_for_the_cache(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    cluster.set_admin_registered("n3", False)
    body = await api(client, "/api/nodes")
    assert statuses(body)["n3"]["code"] == "UNIMPLEMENTED"
    [problem] = body["problems"]
    assert problem["cause"] == "no_admin"
    assert problem["next_step"].startswith("start the node with --adminTokenFile")
    doc = parse_html((await client.get("/nodes/")).content.decode())
    assert doc.find(id="nodes-table").find("tr", data_node="n3").find("span").words == "no Admin"

    # Registering restarts the node's server: the remembered UNIMPLEMENTED (60 s) goes with
    # the connection that said it.
    cluster.set_admin_registered("n3", True)
    back = await eventually(
        lambda: api(client, "/api/nodes"), lambda b: statuses(b)["n3"]["ok"], attempts=20
    )
    row = next(n for n in back["data"]["nodes"] if n["node_id"] == "n3")
    assert row["rpcs"]["GetRaftGroups"] == "yes"
    assert "no" not in row["rpcs"].values() or row["rpcs"]["GetAdapterSummary"] == "no"


async def test_keyviz_enabled_on_restart_is_probed_again_at_once(devcluster_factory, portal):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    cluster.set_keyviz_enabled("n2", False)
    body = await api(client, "/api/nodes")
    row = next(n for n in body["data"]["nodes"] if n["node_id"] == "n2")
    assert row["rpcs"]["GetKeyVizMatrix"] == "disabled"

    # As a real node: restarted with --keyvizEnabled. The probe verdict (kept 60 s) is
    # asked again once the node answers on a new connection.
    cluster.set_keyviz_enabled("n2", True)
    cluster.restart_node("n2")
    back = await eventually(
        lambda: api(client, "/api/nodes"),
        lambda b: (
            next(n for n in b["data"]["nodes"] if n["node_id"] == "n2")["rpcs"]["GetKeyVizMatrix"]
            == "yes"
        ),
        attempts=20,
    )
    assert statuses(back)["n2"]["ok"]


# -- 3. node token: insecure nodes, verification by ordinary calls ----------------------------


async def test_an_insecure_node_shows_as_accepting_any_token(
    devcluster_factory, portal, make_user, parse_html
):
    cluster = devcluster_factory(insecure_no_auth=True)
    portal(cluster.addresses)  # the portal itself holds a token (it does not know)
    admin = AsyncClient()
    await admin.aforce_login(await sync_to_async(make_user)("truth-admin", "admin"))
    response = await admin.get("/settings/node-token/", headers=LIVE)
    assert response.status_code == 200
    doc = parse_html(response.content.decode())
    rows = doc.find(id="node-token-nodes").find("tbody").find_all("tr")
    assert {r.attrs["data-node"]: r.attrs["data-state"] for r in rows} == {
        "n1": "any",
        "n2": "any",
        "n3": "any",
    }
    assert all("accepts any token (insecure)" in r.words for r in rows)


async def test_ordinary_calls_verify_the_token_they_carried(devcluster_factory, portal):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    # The write happens at the token store's next sync (at most once a second).
    status = await eventually(
        lambda: _after_a_call(client),
        lambda s: s.current is not None and s.current.verified_at is not None,
        attempts=20,
    )
    assert status.checks == ()  # no probe ran: the dashboards' own calls verified it


async def _after_a_call(client: AsyncClient) -> Any:
    from cluster.node_token import token_status

    await api(client, "/api/nodes")
    return await sync_to_async(token_status)()


# -- 4. a wrong token: cause and next step, once ----------------------------------------------


async def test_a_wrong_token_names_the_cause_and_the_settings_page_once(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory()
    cluster.set_node_token("n3", "a-token-the-portal-does-not-have")
    client = portal(cluster.addresses)
    body = await api(client, "/api/cluster/overview")
    assert [p["cause"] for p in body["problems"]] == ["token"], body["problems"]
    [problem] = body["problems"]
    assert "see Settings → Node token" in problem["next_step"]
    assert [a["node"] for a in problem["nodes"]] == ["n3"]
    assert "does-not-have" not in str(body)

    html = (await client.get("/")).content.decode()
    doc = parse_html(html)
    causes = doc.find(data_testid="node-banner").find_all("li", data_cause="token")
    assert len(causes) == 1, doc.find(data_testid="node-banner").words
    cause = causes[0]
    assert "Invalid admin token on n3" in cause.words
    assert html.count("invalid admin token)") == 1  # the node's words: once, in <details>
    assert doc.find(id="nodes-table").find("tr", data_node="n3").find("span").words == (
        "auth failed"
    )


# -- 5. Raft rates and lag trend --------------------------------------------------------------


async def test_raft_page_shows_commit_rates_and_a_lag_trend(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory(profile="design")
    client = portal(cluster.addresses)
    owner = cluster.route_for_key(b"user:1").group_id
    await api(client, "/api/raft/groups")
    cluster.inject([Op("n1", "write", b"user:1", size=10, count=50)])
    await asyncio.sleep(1.1)  # samples closer than a second are not kept
    raft = await api(client, "/api/raft/groups")
    group = next(g for g in raft["data"]["groups"] if g["raft_group_id"] == owner)
    for r in group["replicas"]:
        assert r["commit_rate"] is not None
        assert r["commit_rate"] > 0
        assert len(r["lag_trend"]) == 2
    quiet = [g for g in raft["data"]["groups"] if g["raft_group_id"] != owner]
    assert all(r["commit_rate"] == 0 for g in quiet for r in g["replicas"])
    doc = parse_html((await client.get("/raft/")).content.decode())
    body = doc.find(id="raft-table").find("tbody", data_group=str(owner))
    for row in body.find_all("tr"):
        assert row.field("commit-rate").endswith("/s")
        assert row.field("commit-rate") != "0/s"


# -- 6. traffic figure and leadership balance -------------------------------------------------


async def test_overview_traffic_says_when_there_is_no_history(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory()
    client = portal(cluster)
    body = await api(client, "/api/cluster/overview")
    assert body["data"]["traffic"]["reads_per_s"] is None
    doc = parse_html((await client.get("/")).content.decode())
    assert doc.find(id="traffic").field("traffic-empty").startswith("No traffic history yet")


async def test_overview_traffic_sums_the_newest_stored_columns(
    devcluster_factory, portal, parse_html
):
    import time

    from keyviz.store import save_merged
    from tests.unit.keyviz.store_kit import READS, WRITES, merged

    cluster = devcluster_factory()
    client = portal(cluster)  # the portal's step is the cluster's
    step = cluster.step_ms
    now = time.time_ns() // 1_000_000
    newest = now - now % step
    columns = [
        merged(newest - step, {"a": 60, "b": 60}, series=WRITES, step=step),
        merged(newest, {"a": 120, "b": 240}, series=WRITES, step=step),
        merged(newest, {"a": 30}, series=READS, step=step),
    ]
    await sync_to_async(save_merged)(columns)
    traffic = (await api(client, "/api/cluster/overview"))["data"]["traffic"]
    assert traffic["writes"] == [120 * 1000 / step, 360 * 1000 / step]
    assert traffic["writes_per_s"] == 360 * 1000 / step
    assert traffic["reads_per_s"] == 30 * 1000 / step
    doc = parse_html((await client.get("/")).content.decode())
    assert doc.find(id="traffic").find(data_stat="writes").field("writes").endswith("/s")
    assert doc.find(id="traffic").find(data_stat="writes").has("svg")


async def test_overview_hints_at_a_node_leading_far_more_than_its_share(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory(groups=6)
    for gid in range(1, 7):
        cluster.transfer_leadership(gid, "n1")
    client = portal(cluster.addresses)
    body = await api(client, "/api/cluster/overview")
    assert body["data"]["leadership_hints"] == ["n1 leads 6 of 6 groups (a fair share is 2.0)"]
    doc = parse_html((await client.get("/")).content.decode())
    assert "n1 leads 6 of 6 groups" in doc.find(data_testid="leadership-hint").words


async def test_balanced_leadership_gives_no_hint(devcluster_factory, portal, parse_html):
    cluster = devcluster_factory(groups=3)
    client = portal(cluster.addresses)
    body = await api(client, "/api/cluster/overview")
    assert body["data"]["leadership_hints"] == []
    doc = parse_html((await client.get("/")).content.decode())
    assert not doc.has(data_testid="leadership-hint")


# -- 7. the live text says what happens in each mode ------------------------------------------


async def test_live_text_matches_the_refresh_with_and_without_javascript(
    devcluster_factory, portal, parse_html
):
    cluster = devcluster_factory()
    client = portal(cluster.addresses)
    doc = parse_html((await client.get("/")).content.decode())
    meta = doc.find("meta", http_equiv="refresh")
    noscript_text = doc.find(data_testid="live-mode-noscript").words
    assert noscript_text == f"reloads every {meta.attrs['content']} s (JavaScript off)"
    live_text = doc.find(data_testid="live-mode")
    assert "js-only" in live_text.attrs["class"].split()  # hidden without JavaScript
    period = re.fullmatch(r"every (\d+)s", doc.find(id="live").attrs["hx-trigger"])
    assert period is not None
    assert live_text.words == f"live · every {period.group(1)} s"
