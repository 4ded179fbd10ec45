"""The Key Visualizer without JavaScript: the page itself carries, inside <noscript>, the
window's hottest key ranges and their totals from the store, and says the map needs
JavaScript (issue 17 item 12). Rendered through the Django test client: no script runs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from keyviz import store
from tests.unit.keyviz.store_kit import STEP, T0, merged, meta

pytestmark = pytest.mark.django_db

WINDOW = f"from={T0}&to={T0 + 4 * STEP}"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    store.clear_bucket_cache()
    yield
    store.clear_bucket_cache()


@pytest.fixture
def viewer(make_user: Any) -> Client:
    user = make_user("nojs-viewer", "viewer")
    client = Client()
    client.force_login(user)
    return client


def noscript(client: Client, query: str) -> str:
    response = client.get(f"/keyviz/?{query}")
    assert response.status_code == 200
    found = re.search(r"<noscript>\s*<link.*?</noscript>", response.content.decode(), re.S)
    assert found, "no <noscript> fallback in the page"
    return found.group(0)


def test_without_javascript_the_page_lists_the_hottest_rows_and_their_totals(viewer: Client):
    metas = {
        "hot": meta("hot", start=b"!sqs|route|jobs", end=b"!sqs|route|jobt"),
        "warm": meta("warm", start=b"user:1", end=b"user:5"),
        "idle": meta("idle", start=b"user:5", end=b""),
    }
    store.save_merged(
        [merged(T0 + k * STEP, {"hot": 90, "warm": 10, "idle": 0}, metas=metas) for k in (1, 2)]
    )
    text = noscript(viewer, WINDOW)
    assert "The interactive heatmap needs JavaScript" in text
    rows = re.findall(r"<tr><td class=\"keycell\">(.*?)</tr>", text, re.S)
    assert len(rows) == 2  # the idle range carried nothing: not a hot row
    assert "SQS queue jobs" in rows[0]
    assert ">180<" in rows[0]
    assert "90.0 %" in rows[0]
    assert "user:1" in rows[1]
    assert ">20<" in rows[1]
    assert "10.0 %" in rows[1]
    assert re.search(r"Every key range</td><td class=\"num\">200<", text)


def test_without_javascript_an_empty_window_says_so(viewer: Client):
    text = noscript(viewer, WINDOW)
    assert "No traffic stored in this window." in text


def test_a_bad_window_is_a_message_in_the_fallback_not_an_error_page(viewer: Client):
    response = viewer.get(f"/keyviz/?from={T0 + STEP}&to={T0}")
    assert response.status_code == 200  # the interactive page reports it too
    text = noscript(viewer, f"from={T0 + STEP}&to={T0}")
    assert "must be before to" in text


def test_without_javascript_the_pages_preset_range_chooses_the_window(viewer: Client):
    now = int(time.time() * 1000)
    now -= now % STEP
    metas = {
        "recent": meta("recent", start=b"user:1", end=b"user:5"),
        "earlier": meta("earlier", start=b"user:5", end=b""),
    }
    store.save_merged(
        [
            merged(now - 3 * 3_600_000, {"recent": 0, "earlier": 70}, metas=metas),
            merged(now - 10 * STEP, {"recent": 5, "earlier": 0}, metas=metas),
        ]
    )
    last_hour = noscript(viewer, "range=1h")
    last_day = noscript(viewer, "range=24h")

    def rows(text: str) -> list[str]:
        return re.findall(r"<tr><td class=\"keycell\">(.*?)</tr>", text, re.S)

    assert len(rows(last_hour)) == 1  # the earlier range was busy 3 h ago only
    assert ">5<" in rows(last_hour)[0]
    assert len(rows(last_day)) == 2
    assert ">70<" in rows(last_day)[0]  # hottest first
    assert ">75<" in last_day  # the window's total
