"""Settings -> Node token in real Chromium against `elastickv-admin serve` and a devcluster:
an admin walks a whole rotation; a viewer cannot reach it."""

from __future__ import annotations

import sqlite3

import pytest
from playwright.sync_api import expect

from devcluster.pytest_plugin import TEST_TOKEN

pytestmark = pytest.mark.browser

LIVE_WAIT_MS = 15_000  # the table refreshes every 5 s


def node_state(page, node: str) -> str:
    return str(page.locator(f"#node-token-nodes tr[data-node={node}]").get_attribute("data-state"))


def wait_for_state(page, node: str, state: str) -> None:
    page.wait_for_selector(
        f"#node-token-nodes tr[data-node={node}][data-state={state}]", timeout=LIVE_WAIT_MS
    )


@pytest.fixture
def cluster_portal(devcluster_factory, portal_factory, tmp_path):
    cluster = devcluster_factory(profile="design")
    token_file = tmp_path / "portal-node-token"
    token_file.write_text(TEST_TOKEN + "\n")
    portal = portal_factory(
        ["--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token_file)]
    )
    return cluster, portal


def test_an_admin_rolls_the_node_token_across_the_cluster(cluster_portal, page, artifacts_dir):
    cluster, portal = cluster_portal
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
    portal.login(page)
    page.goto(portal.url + "/settings/")
    page.click("#node-token-link")
    assert page.locator("h1").inner_text() == "Settings / Node token"
    assert page.locator("[data-field=rotation]").inner_text() == "none"
    for node in ("n1", "n2", "n3"):
        assert node_state(page, node) == "current"
    page.screenshot(path=str(artifacts_dir / "node-token-idle.png"), full_page=True)

    # Start: the generated token is shown once, copied and downloaded as a token file.
    page.click("#generate-token")
    assert "it will not be shown again" in page.inner_text(".banner.warn")
    token = page.locator("#next-token").inner_text()
    assert len(token) == 43
    page.click("#copy-token")
    expect(page.locator("#copy-token")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == token
    with page.expect_download() as download:
        page.click("#download-token")
    assert download.value.suggested_filename == "admin-token"
    assert download.value.path().read_text() == token + "\n"
    page.screenshot(path=str(artifacts_dir / "node-token-generated.png"), full_page=True)
    page.click("#continue")
    assert token not in page.content()
    assert page.locator("[data-field=rotation]").inner_text() == "rolling"

    # Roll the nodes one by one; the table follows by itself and the dashboards stay whole.
    cluster.set_node_token("n1", token)
    wait_for_state(page, "n1", "next")
    assert page.locator("#finish-rotation").is_disabled()
    assert page.locator("[data-field=nodes-on-next]").inner_text() == "1 of 3"
    page.screenshot(path=str(artifacts_dir / "node-token-rolling.png"), full_page=True)
    page.click("#force-finish")
    assert page.locator("#losing-nodes tbody tr").count() == 2
    page.screenshot(path=str(artifacts_dir / "node-token-force-confirm.png"), full_page=True)
    page.click("text=Back, keep rolling")
    page.goto(portal.url + "/")
    assert page.locator("[data-testid=responded]").inner_text() == "3 of 3 nodes responded"
    page.goto(portal.url + "/settings/node-token/")
    for node in ("n2", "n3"):
        cluster.set_node_token(node, token)
        wait_for_state(page, node, "next")
    page.wait_for_selector("#finish-rotation:not([disabled])", timeout=LIVE_WAIT_MS)
    # The steps card follows the same refresh (an out-of-band swap).
    assert page.locator("#rotation-steps li.now").inner_text().startswith("Finish.")
    page.screenshot(path=str(artifacts_dir / "node-token-ready.png"), full_page=True)

    page.click("#finish-rotation")
    assert "Rotation finished" in page.inner_text(".banner.ok")
    assert page.locator("[data-field=rotation]").inner_text() == "none"
    for node in ("n1", "n2", "n3"):
        assert node_state(page, node) == "current"
    page.screenshot(path=str(artifacts_dir / "node-token-finished.png"), full_page=True)
    status = portal.manage("node_token", "status", "--no-probe")
    assert "rotation: none" in status
    assert token not in status
    # Neither token in clear in the portal's database file or its log.
    with sqlite3.connect(portal.log.parent / "portal.sqlite3") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "".join(
            repr(db.execute(f'SELECT * FROM "{t}"').fetchall())  # noqa: S608 (names from the schema)
            for t in tables
        )
    log = portal.log.read_text()
    assert "node_token.rotation_finished" in dump
    assert "node_token.rotation_finished" in log
    for secret in (TEST_TOKEN, token):
        assert secret not in dump
        assert secret not in log
    assert page.console_errors == []
    assert page.bad_resources == []


def test_a_viewer_cannot_reach_the_node_token(cluster_portal, page, artifacts_dir):
    _, portal = cluster_portal
    portal.login(page)
    page.goto(portal.url + "/settings/")
    page.fill("input[name=username]", "vera")
    page.check("input[name=roles][value=viewer]")
    page.click("text=Create user")
    password = page.locator("#new-password").inner_text()
    page.click(".user-menu button:has-text('Log out')")
    portal.login(page, "vera", password)
    response = page.goto(portal.url + "/settings/node-token/")
    assert response.status == 403
    assert "this page needs the admin role" in page.inner_text("main")
    page.screenshot(path=str(artifacts_dir / "node-token-viewer-refused.png"), full_page=True)
    # The form posts are refused too (the CSRF token comes from a page the viewer may open).
    page.goto(portal.url + "/")
    status = page.evaluate(
        """async () => {
            const csrf = document.body.getAttribute("hx-headers").match(/"X-CSRFToken": "([^"]+)"/)[1];
            const r = await fetch("/settings/node-token/start/", {
                method: "POST", headers: {"X-CSRFToken": csrf}, body: new URLSearchParams({mode: "generate"})});
            return r.status;
        }"""
    )
    assert status == 403
    assert "rotation: none" in portal.manage("node_token", "status", "--no-probe")
