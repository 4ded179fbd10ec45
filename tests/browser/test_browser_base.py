"""The base page in real Chromium: navigation present, static files served under ASGI."""

from __future__ import annotations

import pytest

NAV = [
    "Overview",
    "Nodes",
    "Raft groups",
    "Routes",
    "Adapters",
    "Key Visualizer",
    "Hot ranges",
    "Events",
    "Audit log",
    "Settings",
]


@pytest.mark.browser
def test_base_page_shows_the_navigation(logged_in_page, artifacts_dir):
    page = logged_in_page
    page.goto(page.portal.url + "/audit/")
    links = page.locator("nav[aria-label=Main] ul.nav a")
    assert links.all_inner_texts() == NAV
    assert page.locator("nav a[aria-current=page]").inner_text() == "Audit log"
    # The stylesheet and htmx come from the portal itself (no CDN on these machines).
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate("getComputedStyle(document.querySelector('.sidebar')).display") == "flex"
    page.screenshot(path=str(artifacts_dir / "base-page.png"), full_page=True)
    assert page.console_errors == []
    assert page.bad_resources == []
