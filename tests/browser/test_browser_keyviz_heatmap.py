"""The Key Visualizer's interaction details in real Chromium against a devcluster: the
drawer beside the pinned cell, double-click, clicks while live, the live pill, "jump to
now", and cluster events drawn on the time axis (issue 17 items 6, 7, 9, 10; issue 18)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster import Op
from tests.browser.test_browser_keyviz import (
    HOT,
    bucket,
    ready,
    serve,
    served_history,
    until,
)

pytestmark = pytest.mark.browser


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two viewport rectangles ({x, y, w, h}) intersect."""
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def box(page, selector: str) -> dict[str, float]:
    found: dict[str, float] = page.evaluate(
        """(s) => { const r = document.querySelector(s).getBoundingClientRect();
                    return {x: r.left, y: r.top, w: r.width, h: r.height}; }""",
        selector,
    )
    return found


@pytest.mark.parametrize("width", [1440, 1024])
def test_the_drawer_opens_beside_the_pinned_cell_and_leaves_its_tooltip_whole(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path, width
):
    cluster, columns, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    page.set_viewport_size({"width": width, "height": 900})
    hot = bucket(cluster, HOT)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    # The newest column is at the right edge: where the drawer used to open over it.
    for column in (columns[-1], columns[0]):
        at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {column})")
        page.mouse.click(at["x"], at["y"])
        until(page, f"window.keyviz.pinned && window.keyviz.pinned.t === {column}")
        page.locator("#kv-drawer").wait_for(state="visible")
        cell = page.evaluate(f"window.keyviz.cellBox('{hot}', {column})")
        drawer = box(page, "#kv-drawer")
        tooltip = box(page, "#kv-tooltip")
        assert not overlap(cell, drawer), (cell, drawer)
        assert not overlap(tooltip, drawer), (tooltip, drawer)
        assert page.locator("#kv-tooltip").get_attribute("data-column") == str(column)
        page.screenshot(
            path=str(artifacts_dir / f"keyviz-drawer-{width}-{column == columns[0]}.png")
        )
        page.keyboard.press("Escape")
        page.locator("#kv-drawer").wait_for(state="hidden")
    # Totals as text: one line per row, in both tables (a stretched table grew every row).
    page.locator("#kv-totals summary").click()
    until(page, "document.querySelectorAll('#kv-col-totals tbody tr').length > 0")
    until(page, "document.querySelectorAll('#kv-row-totals tbody tr').length > 0")
    heights: list[float] = page.evaluate(
        """[...document.querySelectorAll('#kv-totals tbody tr')]
             .map((tr) => tr.getBoundingClientRect().height)"""
    )
    line = page.evaluate(
        """(() => { const cs = getComputedStyle(document.querySelector('#kv-totals td'));
                    return parseFloat(cs.lineHeight) || 1.3 * parseFloat(cs.fontSize); })()"""
    )
    assert max(heights) < 2 * line, (heights, line)
    page.locator("#kv-totals").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"keyviz-totals-{width}.png"))
    assert page.console_errors == []


def test_double_click_resets_the_zoom_and_pins_nothing_and_labels_never_overlap(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster, columns, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    hot = bucket(cluster, HOT)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    full = page.evaluate("window.keyviz.view")
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[3]})")
    page.mouse.move(at["x"], at["y"])
    for _ in range(6):
        page.mouse.wheel(0, -400)  # magnify around the hot cell
    until(page, f"window.keyviz.view.y1 - window.keyviz.view.y0 < {full['y1'] - full['y0']}")
    page.evaluate("new Promise((done) => requestAnimationFrame(() => done()))")
    # Zoomed in, the key axis' labels keep at least a line (16 px) apart.
    labels: list[dict[str, Any]] = page.evaluate("window.keyviz.keyLabels()")
    assert len(labels) >= 2
    assert all(b["y"] - a["y"] >= 16 for a, b in itertools.pairwise(labels)), labels
    page.screenshot(path=str(artifacts_dir / "keyviz-magnified.png"))

    view = page.evaluate("window.keyviz.view")
    assert view != full
    # Double-click a cell in view.
    at = page.evaluate(
        f"window.keyviz.cellCenter(window.keyviz.rowIds()[{int(view['y0'])}], "
        f"window.keyviz.columns()[{int(view['x0'])}])"
    )
    page.mouse.dblclick(at["x"], at["y"])
    until(
        page, f"JSON.stringify(window.keyviz.view) === '{json.dumps(full, separators=(',', ':'))}'"
    )
    # Then a single click on another cell: pins fire in order, so once it has pinned,
    # a pin from the double-click would have happened before it.
    other = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[1]})")
    page.mouse.click(other["x"], other["y"])
    until(page, "window.keyviz.pins >= 1")
    assert page.evaluate("window.keyviz.pins") == 1
    assert page.evaluate("window.keyviz.pinned.t") == columns[1]
    assert page.console_errors == []


def test_live_click_pins_the_hovered_column_the_pill_says_paused_and_custom_stops_live(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(profile="design", timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    cluster.inject([Op(leader, "write", HOT, count=40)])
    time.sleep(3.5 * step / 1000)
    page.goto(portal.url + "/keyviz/")
    ready(page)
    pill = "document.getElementById('kv-live-status')"
    until(page, f"{pill}.dataset.state === 'live'")
    until(page, "window.keyviz.liveDraws.length >= 1", timeout=10_000)
    hot = bucket(cluster, HOT)
    until(page, f"window.keyviz.rowIds().includes('{hot}')")

    # Hover the newest column; live columns wait while the pointer is on the map.
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}')")
    page.mouse.move(at["x"], at["y"])
    until(page, f"{pill}.dataset.state === 'paused'")
    # Paused now: the newest column stays put under the pointer (a column may have come
    # in just before the pause, so take it again).
    newest = page.evaluate("window.keyviz.columns().at(-1)")
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {newest})")
    page.mouse.move(at["x"], at["y"])
    until(page, "window.keyviz.queued >= 1", timeout=10_000)  # a column arrived meanwhile
    page.mouse.click(at["x"], at["y"])
    until(page, "window.keyviz.pinned !== null")
    assert page.evaluate("window.keyviz.pinned.t") == newest
    assert page.locator("#kv-tooltip").get_attribute("data-column") == str(newest)
    page.keyboard.press("Escape")
    # Off the map, the waiting columns are drawn and the pill is live again.
    page.mouse.move(2, 2)
    until(page, f"window.keyviz.columns().at(-1) > {newest}")
    until(page, f"{pill}.dataset.state === 'live'")

    # Magnified away from now while live: "jump to now" appears and brings the edge back.
    canvas = box(page, "#kv-canvas")
    page.mouse.move(canvas["x"] + 230, canvas["y"] + 100)
    for _ in range(5):
        page.mouse.wheel(0, -400)
    page.mouse.move(2, 2)
    until(page, "!document.getElementById('kv-now').hidden")
    page.screenshot(path=str(artifacts_dir / "keyviz-jump-to-now.png"))
    page.locator("#kv-now").click()
    until(page, "window.keyviz.view.x1 >= window.keyviz.columns().length - 0.01")
    until(page, "document.getElementById('kv-now').hidden")

    # Subscribes past the server's limit are refused (429): the page subscribes again
    # after a backoff instead of giving up, and is live again.
    before = page.evaluate("window.keyviz.subscribes")
    page.evaluate("window.keyviz.subscribeBurst(8)")
    until(page, f"{pill}.textContent.includes('rate-limited')")
    until(page, f"window.keyviz.subscribes >= {before} + 6", timeout=15_000)
    until(page, f"{pill}.dataset.state === 'live'")

    # Custom: the window stops following the clock, and the pill says so at once.
    page.locator("#kv-range label", has_text="Custom").click()
    until(page, f"{pill}.dataset.state === 'off'")
    assert "live off" in page.locator("#kv-live-status").inner_text()
    assert page.console_errors == []


def test_cluster_events_are_marked_on_the_time_axis_and_listed_in_the_cell_drawer(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster, columns, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    route = cluster.route_for_key(HOT)
    hot = bucket(cluster, HOT)
    events = [
        {"type": "node_down", "unix_ms": columns[3] - 20_000, "node_id": "n2"},
        {
            "type": "route_split",
            "unix_ms": columns[4] - 30_000,
            "raft_group_id": route.group_id,
            "details": {"route_id": route.route_id, "into": [route.route_id + 1000]},
        },
    ]
    code = (
        "import json; from keyviz import events; "
        f"events.save([events.Observed(**e) for e in json.loads({json.dumps(json.dumps(events))})])"
    )
    portal.manage("shell", "-c", code)
    portal.login(page)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    until(page, "document.querySelectorAll('.kv-event-mark').length === 2")
    marks = page.locator(".kv-event-mark")
    titles = [marks.nth(i).get_attribute("title") or "" for i in range(2)]
    assert any("node n2 went down" in t for t in titles), titles
    assert any(f"route {route.route_id} split into" in t for t in titles), titles
    # Drawn on the canvas: the mark's centre has the event colour, not the background.
    down = page.locator(".kv-event-mark[data-type=node_down]")
    b = down.bounding_box()
    assert b is not None
    rgb = page.evaluate(
        f"window.keyviz.pixelAt({b['x'] + b['width'] / 2}, {b['y'] + b['height'] / 2 + 2})"
    )
    event_rgb = page.evaluate(
        "getComputedStyle(document.getElementById('keyviz')).getPropertyValue('--kv-event').trim()"
    )
    want = [int(event_rgb[i : i + 2], 16) for i in (1, 3, 5)]
    assert max(abs(x - y) for x, y in zip(rgb, want, strict=True)) < 40, (rgb, want)
    # The split as a boundary across the rows of its route, at its time.
    split = page.locator(".kv-event-mark[data-type=route_split]")
    assert "route" in (split.get_attribute("class") or "")
    page.screenshot(path=str(artifacts_dir / "keyviz-events.png"))

    # The canvas colours are the page's CSS variables: a theme that changes one (as the
    # dark theme does) recolours the map without a reload.
    page.evaluate("document.documentElement.style.setProperty('--kv-zero', '#00ff00')")
    until(page, f"window.keyviz.pixel('{hot}', {columns[0]}).join() === '0,255,0'")

    # A byte series: the row totals' maximum is drawn whole inside the canvas.
    page.locator("#kv-series label", has_text="Write bytes").click()
    ready(page, "write_bytes")
    label = page.evaluate("window.keyviz.rowMaxLabel()")
    assert label["text"].endswith("iB"), label
    assert label["width"] <= label["room"], label
    page.screenshot(path=str(artifacts_dir / "keyviz-bytes.png"))
    page.locator("#kv-series label", has_text="Writes").first.click()
    ready(page, "writes")

    # The PNG export carries a header (series, window) and a legend under the map.
    with page.expect_download() as download:
        page.locator("#kv-export-png").click()
    png = Path(download.value.path()).read_bytes()
    canvas = page.evaluate(
        "[document.getElementById('kv-canvas').width, document.getElementById('kv-canvas').height]"
    )
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == canvas[0]
    assert height > canvas[1]

    # The cell drawer lists the events within a few steps of the cell.
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[3]})")
    page.mouse.click(at["x"], at["y"])
    page.locator("#kv-drawer").wait_for(state="visible")
    listed = page.locator("#kv-cell-events li")
    until(page, "document.querySelectorAll('#kv-cell-events li').length === 2")
    assert "node n2 went down" in listed.nth(0).inner_text()
    assert "split" in listed.nth(1).inner_text()
    assert page.console_errors == []


def test_a_hot_range_links_to_the_heatmap_zoomed_on_its_key_range(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster, _, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    hot = bucket(cluster, HOT)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    every_row = page.evaluate("window.keyviz.rowIds().length")

    page.goto(portal.url + "/keyviz/hot/?series=writes&window=60m")
    first = page.locator("table.data tbody tr").first
    assert first.locator("td").first.inner_text().strip() == "1"
    first.get_by_role("link", name="heatmap →").click()
    page.wait_for_url("**/keyviz/?*start_key=*")
    ready(page, "writes")
    shown = page.evaluate("window.keyviz.rowIds()")
    assert hot in shown  # the hottest range (500 writes in one minute) is on the map
    assert len(shown) < every_row  # and the map is zoomed on its key range
    page.screenshot(path=str(artifacts_dir / "keyviz-from-hot-ranges.png"))
    assert page.console_errors == []
