"""The cluster pages in real Chromium against a devcluster, through `elastickv-admin serve`.

Each test saves screenshots into test-artifacts/screenshots/ (cluster-*.png).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devcluster import DevCluster, Op
from devcluster.pytest_plugin import TEST_TOKEN

pytestmark = pytest.mark.browser

TRAFFIC = [
    Op("n1", "write", b"user:1", size=120, adapter="redis", count=40, latency_ns=900_000),
    Op("n2", "read", b"user:1", size=80, adapter="redis", count=90, latency_ns=300_000),
    Op("n1", "read", b"user:2", size=80, adapter="redis", count=60, follower_local=True),
    Op("n3", "read", b"user:3", size=64, adapter="redis", count=75, follower_local=True),
    Op("n3", "read", b"item:7", size=500, adapter="dynamo", count=25, follower_local=True),
    Op("n1", "write", b"order:3", size=2048, adapter="s3", count=6, latency_ns=12_000_000),
]


def serve(portal_factory, cluster: DevCluster, tmp_path: Path):
    token = tmp_path / "node-token"
    token.write_text(TEST_TOKEN)
    return portal_factory(
        [
            *("--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token)),
            *("--keyvizStep", f"{cluster.step_ms}ms"),  # the nodes' --keyvizStep
        ]
    )


def rows(page, selector: str) -> list[str]:
    """The data-node / data-group / data-route of each element, in page order."""
    found: list[str] = page.locator(selector).evaluate_all(
        "els => els.map(e => e.dataset.node || e.dataset.group || e.dataset.route)"
    )
    return found


def test_every_cluster_page_shows_the_cluster(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster = devcluster_factory(profile="design")
    cluster.inject(TRAFFIC)
    user = cluster.route_for_key(b"user:1")
    cluster.split_route(user.route_id, b"user:5")
    cluster.transfer_leadership(3, "n1")
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)

    page.goto(portal.url + "/")
    assert page.locator("h1").inner_text() == "Cluster overview"
    assert page.get_by_test_id("responded").inner_text() == "3 of 3 nodes responded"
    assert page.locator("[data-testid=node-banner]").count() == 0
    assert rows(page, "#nodes-table tbody tr") == ["n1", "n2", "n3"]
    assert rows(page, "#groups-table tbody tr") == ["1", "2", "3"]
    assert page.locator("#groups-table tr[data-group='3'] [data-field=leader]").inner_text() == "n1"
    assert page.locator("[data-stat=routes] .value").inner_text() == str(len(cluster.routes()))
    # Support pills, probed from the nodes themselves (design: everything is served).
    pills = page.locator("#nodes-table tr[data-node=n2] .pill.rpc")
    assert pills.evaluate_all("els => els.map(e => e.dataset.support)") == ["yes"] * 4
    page.screenshot(path=str(artifacts_dir / "cluster-overview.png"), full_page=True)

    # A node link navigates with htmx (hx-get, body swap, pushed URL) and without a reload.
    page.evaluate("window.__sameDocument = true")
    page.locator("#nodes-table a", has_text="n2").click()
    page.wait_for_url(re.compile(r"/nodes/n2/$"))
    assert page.locator("h1").inner_text() == "Node n2"
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("nav a[aria-current=page]").inner_text() == "Nodes"
    assert rows(page, "#node-groups-table tbody tr") == ["1", "2", "3"]
    page.screenshot(path=str(artifacts_dir / "cluster-node-detail.png"), full_page=True)

    page.goto(portal.url + "/nodes/")
    assert rows(page, "#nodes-table tbody tr") == ["n1", "n2", "n3"]
    page.screenshot(path=str(artifacts_dir / "cluster-nodes.png"), full_page=True)

    page.goto(portal.url + "/raft/")
    assert rows(page, "#raft-table tbody") == ["1", "2", "3"]
    assert page.locator("#raft-table tbody.highlight").count() == 0
    assert (
        page.locator("#raft-table tbody[data-group='3'] [data-field=leader]").inner_text() == "n1"
    )
    page.screenshot(path=str(artifacts_dir / "cluster-raft.png"), full_page=True)

    page.goto(portal.url + "/routes/")
    assert page.locator("#routes-table tbody tr").count() == len(cluster.routes())
    assert (
        page.locator("#routes-table tbody tr").first.locator("[data-field=start]").inner_text()
        == "-inf"
    )
    # Internal keys read by their family, the raw key in the title.
    txn = page.locator("#routes-table .key.label", has_text="transaction records").first
    assert txn.get_attribute("title") == "!txn|"
    page.screenshot(path=str(artifacts_dir / "cluster-routes.png"), full_page=True)
    # Typing a prefix filters in place (htmx) and puts the query in the address bar.
    page.locator("input[name=prefix]").fill("user:")
    page.wait_for_url(re.compile(r"prefix=user"))
    page.wait_for_function("document.querySelectorAll('#routes-table tbody tr').length === 2")
    assert page.locator("#catalog-line [data-field=matched]").inner_text() == "2"
    page.locator("select[name=sort]").select_option("-route")
    page.wait_for_url(re.compile(r"sort=-route"))
    page.wait_for_function(
        "Number(document.querySelector('#routes-table tbody tr').dataset.route) > "
        "Number(document.querySelector('#routes-table tbody tr:last-child').dataset.route)"
    )
    page.screenshot(path=str(artifacts_dir / "cluster-routes-filtered.png"), full_page=True)
    page.goto(portal.url + "/routes/?group=x")
    assert "group: must be a Raft group id" in page.get_by_test_id("form-errors").inner_text()

    page.goto(portal.url + "/adapters/")
    bodies = page.locator("#adapters-table tbody")
    assert bodies.evaluate_all(
        "els => els.map(e => e.dataset.adapter + ' ' + e.dataset.operation)"
    ) == [
        "dynamo GetItem",
        "redis GET",
        "redis SET",
        "s3 PutObject",
    ]
    redis_get = page.locator(
        "#adapters-table tbody[data-operation=GET] tr.total [data-field=requests]"
    )
    assert redis_get.inner_text() == "225"  # 90 + 60 + 75, served by three nodes
    page.screenshot(path=str(artifacts_dir / "cluster-adapters.png"), full_page=True)

    assert page.console_errors == []
    assert page.bad_resources == []


def test_banner_appears_when_a_node_goes_down_without_a_reload(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster = devcluster_factory()
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    page.goto(portal.url + "/")
    assert page.locator("[data-testid=node-banner]").count() == 0
    page.evaluate("window.__sameDocument = true")

    cluster.stop_node("n3")
    # The live region refreshes every 5 s: the banner arrives without a page load.
    banner = page.get_by_test_id("node-banner")
    banner.wait_for(timeout=12_000)
    assert page.evaluate("window.__sameDocument") is True
    assert banner.locator("strong").first.inner_text() == "2 of 3 nodes responded."
    cause = banner.locator("li[data-cause=refused]")
    assert (
        cause.locator("[data-testid=next-step]")
        .inner_text()
        .startswith("Next step: is the node running")
    )
    # The node's own words are behind a disclosure, once.
    failed = banner.locator("li[data-node=n3]")
    assert not failed.is_visible()
    cause.locator("details summary").click()
    assert re.fullmatch(
        rf"n3 {re.escape(cluster.node('n3').address)}: unreachable: .+ UNAVAILABLE",
        failed.inner_text(),
    )
    assert page.locator("#nodes-table tr[data-node=n3]").get_attribute("data-reachable") == "false"
    assert page.locator("[data-stat=nodes] .value").inner_text() == "2 / 3"
    page.screenshot(path=str(artifacts_dir / "cluster-overview-node-down.png"), full_page=True)

    # Every page shows it.
    for path in ("/nodes/", "/raft/", "/routes/", "/adapters/"):
        page.goto(portal.url + path)
        assert page.get_by_test_id("node-banner").locator("li[data-node=n3]").count() == 1
    page.screenshot(
        path=str(artifacts_dir / "cluster-adapters-upstream-node-down.png"), full_page=True
    )
    assert "does not provide per-adapter request statistics" in page.inner_text("main")
    assert page.console_errors == []
    assert page.bad_resources == []


def test_pages_work_without_javascript(
    browser, portal_factory, devcluster_factory, tmp_path, artifacts_dir
):
    cluster = devcluster_factory()
    portal = serve(portal_factory, cluster, tmp_path)
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1400, "height": 900}
    )
    try:
        page = context.new_page()
        portal.login(page)  # a plain form POST: no JavaScript needed
        page.goto(portal.url + "/raft/")
        assert page.locator("#raft-table tbody").count() == len(cluster.groups())
        # The live strip says what happens here: a full reload, not htmx every 5 s.
        assert page.get_by_test_id("live-mode").is_hidden()
        assert (
            page.get_by_test_id("live-mode-noscript").inner_text()
            == "reloads every 15 s (JavaScript off)"
        )
        assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == "15"
        page.goto(portal.url + "/routes/")
        page.locator("select[name=group]").select_option("2")
        page.locator("form.filters button[type=submit]").click()
        page.wait_for_url(re.compile(r"group=2"))
        groups = page.locator("#routes-table [data-field=group]").all_inner_texts()
        assert groups
        assert set(groups) == {"2"}
        page.screenshot(path=str(artifacts_dir / "cluster-routes-nojs.png"), full_page=True)
    finally:
        context.close()


def test_degraded_overview_and_raft_pages(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    """One node dead, one slow: the Overview renders what answered, fills in the slow node
    via htmx without a reload, and the Raft page keeps the dead node's replicas."""
    cluster = devcluster_factory(profile="design")
    cluster.inject(TRAFFIC)
    token = tmp_path / "node-token"
    token.write_text(TEST_TOKEN)
    portal = portal_factory(
        [
            *("--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token)),
            *("--keyvizStep", f"{cluster.step_ms}ms"),
        ],
        {"ELASTICKV_ADMIN_PAGE_BUDGET": "1s", "ELASTICKV_ADMIN_SLOW_NODE": "1500ms"},
    )
    portal.login(page)
    page.goto(portal.url + "/raft/")  # the portal has seen every node once
    assert rows(page, "#raft-table tbody") == ["1", "2", "3"]

    cluster.stop_node("n3")
    cluster.set_fault("n2", delay_s=3.0, methods={"GetRaftGroups"})
    page.goto(portal.url + "/")
    page.evaluate("window.__sameDocument = true")
    status = page.locator("#nodes-table tr[data-node=n2] [data-field=status]")
    assert status.get_attribute("data-state") in ("waiting", "slow")
    page.screenshot(path=str(artifacts_dir / "cluster-overview-waiting.png"), full_page=True)
    # The slow node's answer fills in through htmx, without a page load.
    page.locator("#nodes-table tr[data-node=n2] [data-field=status][data-state=slow]").wait_for(
        timeout=15_000
    )
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#nodes-table tr[data-node=n2] .pill").first.inner_text() == "slow"
    banner = page.get_by_test_id("node-banner")
    assert banner.locator("li[data-cause=refused] [data-affected=n3]").count() == 1
    assert page.locator("#nodes-table tr[data-node=n3] .pill").first.inner_text() == "down"
    page.screenshot(path=str(artifacts_dir / "cluster-overview-degraded.png"), full_page=True)

    page.goto(portal.url + "/raft/")
    dead = page.locator("#raft-table tr[data-node=n3]")
    assert dead.count() == 3
    assert all(
        t.startswith("unreachable since")
        for t in page.locator(
            "#raft-table tr[data-node=n3] [data-field=unreachable]"
        ).all_inner_texts()
    )
    leaders = page.locator(
        "#raft-table tr:has(a + .pill.ok) [data-field=contact]"
    ).all_inner_texts()
    assert leaders
    assert set(leaders) == {"leader"}
    page.screenshot(path=str(artifacts_dir / "cluster-raft-degraded.png"), full_page=True)

    # Then every node down: the last-known three, never "0 of 1".
    cluster.stop_node("n1")
    cluster.stop_node("n2")
    page.goto(portal.url + "/")
    page.get_by_test_id("last-known").wait_for(timeout=15_000)
    assert page.get_by_test_id("responded").inner_text() == "0 of 3 nodes responded"
    assert rows(page, "#nodes-table tbody tr") == ["n1", "n2", "n3"]
    page.screenshot(path=str(artifacts_dir / "cluster-overview-all-down.png"), full_page=True)
    assert page.console_errors == []
    assert page.bad_resources == []
