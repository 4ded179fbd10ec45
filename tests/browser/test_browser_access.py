"""Sign-in, roles and the audit log in real Chromium against `elastickv-admin serve`."""

from __future__ import annotations

import csv
import io
import json

import pytest

pytestmark = pytest.mark.browser


def create_user(page, portal, username: str, *roles: str) -> str:
    """As the signed-in admin, through the Settings page; returns the password shown once."""
    page.goto(portal.url + "/settings/")
    page.fill("input[name=username]", username)
    for role in roles:
        page.check(f"input[name=roles][value={role}]")
    page.click("text=Create user")
    return str(page.locator("#new-password").inner_text())


def sign_out(page) -> None:
    page.click(".user-menu button:has-text('Log out')")
    page.wait_for_url("**/login/")


def test_admin_signs_in_and_sees_the_dashboard(portal_factory, page, artifacts_dir):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    page.goto(portal.url + "/nodes/")
    assert "/login/?next=/nodes/" in page.url
    page.screenshot(path=str(artifacts_dir / "access-login.png"))
    page.fill("input[name=password]", "wrong-password")
    page.fill("input[name=username]", portal.admin_username)
    page.click("form button[type=submit]")
    assert "Please enter a correct username and password" in page.inner_text(".banner.bad")
    portal.login(page)
    page.goto(portal.url + "/")
    assert page.locator("h1").inner_text() == "Cluster overview"
    assert page.locator(".user-name").inner_text() == "admin"
    assert page.locator(".user-roles .pill").all_inner_texts() == ["viewer", "admin", "auditor"]
    page.screenshot(path=str(artifacts_dir / "access-dashboard.png"), full_page=True)
    page.goto(portal.url + "/settings/")
    page.screenshot(path=str(artifacts_dir / "access-settings.png"), full_page=True)
    page.goto(portal.url + "/account/tokens/")
    page.fill("input[name=name]", "grafana")
    page.click("text=Create token")
    token = page.locator("#new-token").inner_text()
    assert token.startswith("ekv_")
    page.screenshot(path=str(artifacts_dir / "access-api-tokens.png"), full_page=True)
    page.goto(portal.url + "/account/mfa/")
    page.click("text=Set up")
    assert page.locator(".qr svg").count() == 1
    page.screenshot(path=str(artifacts_dir / "access-mfa-enrol.png"), full_page=True)
    assert page.console_errors == []
    assert page.bad_resources == []


def test_an_auditor_filters_and_exports_the_audit_log(portal_factory, page, artifacts_dir):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    portal.login(page)
    password = create_user(page, portal, "audrey", "auditor")
    page.screenshot(path=str(artifacts_dir / "access-user-created.png"), full_page=True)
    sign_out(page)
    portal.login(page, "audrey", password)
    page.click("nav >> text=Audit log")
    rows = page.locator("#events tbody tr")
    assert rows.count() >= 4  # created admin, admin login, user created, logout, login...
    page.fill("input[name=action]", "login")
    page.click("form.filters button[type=submit]")
    actions = page.locator("#events tbody td:nth-child(4)").all_inner_texts()
    assert actions
    assert set(actions) == {"login"}
    actors = page.locator("#events tbody td:nth-child(3)").all_inner_texts()
    assert set(actors) == {"admin", "audrey"}
    page.screenshot(path=str(artifacts_dir / "access-audit-filtered.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert {r["action"] for r in exported} == {"login"}
    assert len(exported) == len(actions)
    with page.expect_download() as download:
        page.click("#export-jsonl")
    lines = [json.loads(x) for x in download.value.path().read_text().splitlines()]
    assert [x["seq"] for x in lines] == [int(r["seq"]) for r in exported]
    page.click("#events tbody tr:first-child td:first-child a")
    assert page.locator(".pill.ok", has_text="MAC valid").count() == 1
    page.screenshot(path=str(artifacts_dir / "access-audit-event.png"), full_page=True)
    assert "audit chain OK" in portal.manage("audit_verify")
    assert page.console_errors == []


def test_a_viewer_is_refused_the_admin_pages(portal_factory, page, artifacts_dir):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    portal.login(page)
    password = create_user(page, portal, "vic", "viewer")
    sign_out(page)
    portal.login(page, "vic", password)
    nav = page.locator("nav[aria-label=Main] ul.nav a").all_inner_texts()
    assert "Settings" not in nav
    assert "Audit log" not in nav
    assert "Overview" in nav
    response = page.goto(portal.url + "/settings/")
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Permission denied"
    page.screenshot(path=str(artifacts_dir / "access-viewer-refused.png"), full_page=True)
    assert page.goto(portal.url + "/audit/").status == 403
