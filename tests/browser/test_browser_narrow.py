"""A 1024 px wide window: no page scrolls sideways; wide tables scroll inside their card.

Screenshots land in test-artifacts/screenshots/ (narrow-*.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devcluster import Op
from tests.browser.test_browser_cluster import TRAFFIC, serve

pytestmark = pytest.mark.browser

WIDTH = 1024
PAGES = ("/", "/nodes/", "/raft/", "/routes/", "/adapters/", "/audit/", "/settings/")


@pytest.fixture
def narrow_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": WIDTH, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    yield page
    context.close()


def test_no_page_scrolls_sideways_in_a_1024_px_window(
    portal_factory, narrow_page, artifacts_dir, devcluster_factory, tmp_path
):
    page = narrow_page
    cluster = devcluster_factory(profile="design")
    cluster.inject([*TRAFFIC, Op("n2", "write", b"session:9", size=300, adapter="sqs", count=8)])
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    wide: dict[str, int] = {}
    for path in PAGES:
        page.goto(portal.url + path)
        page.wait_for_load_state("networkidle")
        name = path.strip("/") or "overview"
        page.screenshot(path=str(artifacts_dir / f"narrow-{name}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > WIDTH:
            wide[path] = width
    assert wide == {}
    assert page.console_errors == []
