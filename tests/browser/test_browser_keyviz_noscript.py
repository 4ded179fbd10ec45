"""The Key Visualizer with JavaScript off, in real Chromium: instead of "Loading…" forever,
the window's hottest key ranges and their totals from the store, and a sentence saying the
interactive map needs JavaScript (issue 17 item 12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.screens import shoot
from tests.browser.test_browser_keyviz_labels import filled_portal

pytestmark = pytest.mark.browser


@pytest.fixture
def no_js_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, java_script_enabled=False
    )
    page = context.new_page()
    yield page
    context.close()


def test_without_javascript_the_key_visualizer_lists_the_hottest_ranges(
    portal_factory, no_js_page, artifacts_dir, devcluster_factory, tmp_path
):
    page = no_js_page
    portal, _ = filled_portal(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)  # a plain form post: works without JavaScript
    page.goto(portal.url + "/keyviz/")
    fallback = page.get_by_test_id("kv-noscript")
    assert fallback.is_visible()
    assert "The interactive heatmap needs JavaScript" in fallback.inner_text()
    rows = page.locator("#kv-noscript-rows tbody tr")
    assert rows.count() == 2
    # route:901 carried 50..55 per column over 6 columns, route:902 5 per column.
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "DynamoDB table orders" in first
    assert "315" in first
    assert "SQS queue jobs" in second
    assert "30" in second
    assert page.locator("#kv-noscript-rows tfoot").inner_text().split("\t")[-2] == "345"
    # The map that cannot draw is not shown, so "Loading…" is not what the operator reads.
    assert not page.get_by_test_id("kv-summary").is_visible()
    shoot(page, artifacts_dir, "keyviz-noscript")
