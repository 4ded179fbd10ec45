"""Readable key labels and one labelled time zone on the Key Visualizer, in real Chromium.

The store is filled with known rows and columns (keyviz_store_fill); screenshots land in
test-artifacts/screenshots/ (keyviz-labels-*.png, keyviz-tz-*.png).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.browser.keyviz_store_fill import fill_portal_store, store_doc
from tests.browser.test_browser_keyviz import MINUTE, ready, serve
from tests.conftest import open_page

pytestmark = pytest.mark.browser

TOKYO = timezone(timedelta(hours=9))  # no daylight saving time
ROWS = {
    "route:901": (b"!ddb|route|table|orders", b"!sqs|route|jobs"),
    "route:902": (b"!sqs|route|jobs", b"!sqs|route|jobt"),
}


@pytest.fixture
def tokyo_page(browser: Any) -> Iterator[Any]:
    """A browser whose local time zone is Asia/Tokyo (UTC+9), not UTC."""
    yield from open_page(browser, timezone_id="Asia/Tokyo")


def filled_portal(
    portal_factory: Any, devcluster_factory: Any, tmp_path: Any
) -> tuple[Any, list[int]]:
    cluster = devcluster_factory(routes=8)
    portal = serve(portal_factory, cluster, tmp_path)
    now = int(time.time() * 1000) // MINUTE * MINUTE
    columns = [now - (8 - i) * MINUTE for i in range(6)]
    stored = [
        {"t": t, "step": MINUTE, "cells": [["route:901", 50 + i, 0], ["route:902", 5, 0]]}
        for i, t in enumerate(columns)
    ]
    fill_portal_store(portal, store_doc(ROWS, stored))
    return portal, columns


def hover(page: Any, bucket: str, column: int) -> str:
    at = page.evaluate(f"window.keyviz.cellCenter('{bucket}', {column})")
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator("#kv-tooltip")
    tooltip.wait_for(state="visible")
    text: str = tooltip.inner_text()
    return text


def test_heatmap_names_keys_by_their_family_with_the_raw_key_one_hover_away(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    portal, columns = filled_portal(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    text = hover(page, "route:901", columns[2]).replace("\n", "")
    assert "[DynamoDB table orders, SQS queue jobs)" in text
    labels = page.locator("#kv-tooltip .key.label")
    assert labels.first.get_attribute("title") == "!ddb|route|table|orders"
    assert labels.nth(1).get_attribute("title") == "!sqs|route|jobs"
    page.screenshot(path=str(artifacts_dir / "keyviz-labels-tooltip.png"))
    # The totals table below the map reads the same way.
    page.mouse.move(5, 5)
    page.wait_for_function(
        "() => document.querySelector('#kv-row-totals tbody .key.label') !== null"
    )
    first = page.locator("#kv-row-totals tbody tr").first
    assert first.locator(".key.label").first.text_content() == "DynamoDB table orders"
    # The Routes page too: the !txn| route reads as transaction records.
    page.goto(portal.url + "/routes/")
    cell = page.locator(f"td[data-field=start][data-hex='{b'!txn|'.hex()}'] .key.label")
    assert cell.inner_text() == "transaction records"
    assert cell.get_attribute("title") == "!txn|"
    page.screenshot(path=str(artifacts_dir / "keyviz-labels-routes.png"), full_page=True)
    assert page.console_errors == []


def clocks(columns: list[int], zone: timezone) -> set[str]:
    """Every HH:MM of the hour around the columns, in `zone`."""
    start = datetime.fromtimestamp(columns[0] / 1000, UTC) - timedelta(hours=1)
    return {(start + timedelta(minutes=m)).astimezone(zone).strftime("%H:%M") for m in range(180)}


def axis_clocks(page: Any) -> set[str]:
    ticks = page.evaluate("window.keyviz.timeTicks()")
    found = {t for t in ticks if re.fullmatch(r"\d\d:\d\d", t)}
    assert found, ticks
    return found


def window_text(column_end: int, zone: timezone, name: str) -> str:
    a = datetime.fromtimestamp((column_end - MINUTE) / 1000, UTC).astimezone(zone)
    b = datetime.fromtimestamp(column_end / 1000, UTC).astimezone(zone)
    return f"{a:%Y-%m-%d %H:%M} → {b:%H:%M} {name}"


def test_times_are_utc_and_labelled_by_default_and_local_once_chosen_and_remembered(
    portal_factory, tokyo_page, artifacts_dir, devcluster_factory, tmp_path
):
    page = tokyo_page
    portal, columns = filled_portal(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    # Default: UTC, although the browser is in Tokyo.
    assert page.locator("#kv-tz").input_value() == "utc"
    assert axis_clocks(page) <= clocks(columns, UTC)
    assert window_text(columns[2], UTC, "UTC") in hover(page, "route:901", columns[2])
    page.screenshot(path=str(artifacts_dir / "keyviz-tz-utc.png"))
    page.mouse.move(5, 5)

    # Local time, chosen: Tokyo's clock, named.
    page.select_option("#kv-tz", "local")
    assert axis_clocks(page) <= clocks(columns, TOKYO)
    assert not axis_clocks(page) & clocks(columns, UTC)
    assert window_text(columns[2], TOKYO, "Asia/Tokyo") in hover(page, "route:901", columns[2])
    assert "Asia/Tokyo" in page.get_by_test_id("kv-summary").inner_text()
    page.screenshot(path=str(artifacts_dir / "keyviz-tz-local.png"))

    # Remembered on the next visit.
    page.reload()
    ready(page, "writes")
    assert page.locator("#kv-tz").input_value() == "local"
    assert axis_clocks(page) <= clocks(columns, TOKYO)
    # And back to UTC.
    page.select_option("#kv-tz", "utc")
    page.reload()
    ready(page, "writes")
    assert axis_clocks(page) <= clocks(columns, UTC)
    assert page.console_errors == []
