"""The Key Visualizer in real Chromium against a devcluster, through `elastickv-admin serve`.

Pixel checks read the canvas where a known hotspot was injected. Screenshots of each
state land in test-artifacts/screenshots/ (keyviz-*.png).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devcluster import DevCluster, Op
from devcluster.pytest_plugin import TEST_TOKEN
from keyviz.keys import key_preview
from tests.browser.keyviz_store_fill import fill_portal_store, store_doc

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

MINUTE = 60_000
HOT = b"user:42"  # the write hotspot
READS = b"order:7"  # where the reads go


def serve(portal_factory, cluster: DevCluster, tmp_path: Path):
    token = tmp_path / "node-token"
    token.write_text(TEST_TOKEN)
    return portal_factory(
        [
            *("--nodes", ",".join(cluster.addresses), "--nodeTokenFile", str(token)),
            *("--keyvizStep", f"{cluster.step_ms}ms"),  # the nodes' --keyvizStep
        ]
    )


def bucket(cluster: DevCluster, key: bytes) -> str:
    return f"route:{cluster.route_for_key(key).route_id}"


def until(page, expression: str, timeout: int = 10_000) -> None:
    """Wait until a JavaScript expression holds. (A function, not a string: the page's
    CSP forbids eval, which Playwright uses for string predicates.)"""
    page.wait_for_function(f"() => ({expression})", timeout=timeout)


def ready(page, series: str | None = None) -> None:
    condition = "window.keyviz && window.keyviz.ready"
    if series:
        condition += f" && document.getElementById('kv-canvas').dataset.series === '{series}'"
    until(page, condition, 15_000)


def pixel(page, bucket_id: str, column: int | None = None) -> list[int]:
    found: list[int] = page.evaluate(
        "([b, t]) => window.keyviz.pixel(b, t ?? undefined)", [bucket_id, column]
    )
    return found


def bright(rgb: list[int]) -> bool:
    return sum(rgb) > 500  # the top of the palette: pale yellow


def dark(rgb: list[int]) -> bool:
    return sum(rgb) < 80  # no traffic: the background


def history(cluster: DevCluster) -> list[int]:
    """Six one-minute columns in the last hour: light background traffic everywhere, a
    write hotspot on HOT in column 3 and reads on READS in column 1."""
    now = int(time.time() * 1000) // MINUTE * MINUTE
    columns = [now - (8 - i) * MINUTE for i in range(6)]
    special = {cluster.route_for_key(HOT).route_id, cluster.route_for_key(READS).route_id}
    background = [r for r in cluster.routes()[::2] if r.route_id not in special]
    for i, at in enumerate(columns):
        ops = [
            Op("n1", "write", r.start + b"\x00", count=1 + (i + r.route_id) % 3) for r in background
        ]
        if i == 3:
            ops.append(Op("n1", "write", HOT, size=64, count=500))
        if i == 1:
            ops.append(Op("n2", "read", READS, size=32, count=300))
        cluster.inject(ops)
        for j, node in enumerate(cluster.nodes):  # offset flush timers, as on real nodes
            cluster.flush(node.node_id, at_ms=at + 700 * j)
    return columns


def served_history(portal_factory, devcluster_factory, tmp_path: Path):
    """A 24-route devcluster with past columns (history), served by a portal whose collector
    has stored it."""
    cluster = devcluster_factory(routes=24)
    columns = history(cluster)
    portal = serve(portal_factory, cluster, tmp_path)
    wait_collected(portal, columns[-1])
    return cluster, columns, portal


def wait_collected(portal, newest: int, series: tuple[str, ...] = ("writes", "reads")) -> None:
    """Wait until the portal's collector has stored every series up to `newest` (it
    backfills what the nodes hold when it starts)."""
    code = (
        "from keyviz import store; from keyviz.params import SERIES; "
        f"print(min(store.latest_column_ms(SERIES[s]) or 0 for s in {list(series)!r}))"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if int(portal.manage("shell", "-c", code).split()[-1]) >= newest:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"the collector did not store the history:\n{portal.log.read_text()[-3000:]}"
    )


def test_heatmap_draws_switches_series_shows_cells_and_zooms_for_real(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster, columns, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    hot, reads = bucket(cluster, HOT), bucket(cluster, READS)

    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    assert page.locator("h1").inner_text() == "Key Visualizer"
    rows = len(page.evaluate("window.keyviz.rowIds()"))
    assert page.get_by_test_id("kv-summary").inner_text().startswith(f"{rows} \u00d7 6 cells")
    # The node status shown is the collector's, with how long ago it last wrote.
    assert re.fullmatch(
        r" · collector \d+(\.\d)? s ago", page.get_by_test_id("kv-collector-age").inner_text()
    )
    assert bright(pixel(page, hot, columns[3]))
    assert not bright(pixel(page, hot, columns[2]))
    # The store keeps only cells with traffic: a row idle in this series is not shown.
    assert reads not in page.evaluate("window.keyviz.rowIds()")
    assert page.evaluate("([b, t]) => window.keyviz.value(b, t)", [hot, columns[3]]) == 500
    page.screenshot(path=str(artifacts_dir / "keyviz-heatmap.png"))

    # Hover: the tooltip names the window, the bucket, the key range and the value.
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[3]})")
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator("#kv-tooltip")
    tooltip.wait_for(state="visible")
    assert tooltip.get_attribute("data-bucket") == hot
    assert tooltip.get_attribute("data-value") == "500"
    text = tooltip.inner_text()
    assert "500 writes" in text
    assert "null" not in text
    assert "undefined" not in text
    route = cluster.route_for_key(HOT)
    start, end = key_preview(route.start).text, key_preview(route.end, is_end=True).text
    assert f"[{start}, {end.replace('+inf', '+∞')})" in text.replace("\n", "")
    assert re.search(r"\d\d:\d\d → \d\d:\d\d UTC · 1 min", text)
    page.screenshot(path=str(artifacts_dir / "keyviz-tooltip.png"))

    # Click pins it and opens the cell detail: each node's contribution, group, leader.
    page.mouse.click(at["x"], at["y"])
    drawer = page.locator("#kv-drawer")
    drawer.wait_for(state="visible")
    page.locator("#kv-contributions").wait_for()
    assert page.locator("#kv-drawer-title").inner_text() == hot
    contributions = page.locator("#kv-contributions tbody tr")
    assert contributions.count() == 1
    assert contributions.first.get_attribute("data-node") == "n1"
    assert contributions.first.locator("td").nth(1).inner_text() == "500"
    group = cluster.group(route.group_id)
    leader_row = page.locator(f"#kv-detail-groups tr[data-group='{group.group_id}']")
    assert leader_row.locator("td").nth(1).inner_text() == group.leader
    assert (
        leader_row.locator("a", has_text="routes").get_attribute("href")
        == f"/routes/?group={group.group_id}"
    )
    assert page.locator(".kv-spark").count() == 1
    page.screenshot(path=str(artifacts_dir / "keyviz-drawer.png"))
    page.keyboard.press("Escape")
    drawer.wait_for(state="hidden")
    # The map is keyboard reachable: arrows move a cell cursor, Enter opens its detail.
    page.mouse.move(5, 5)
    page.locator("#kv-canvas").focus()
    page.keyboard.press("ArrowUp")
    here = int(tooltip.get_attribute("data-column") or 0)
    page.keyboard.press("ArrowLeft")
    assert int(tooltip.get_attribute("data-column") or 0) == here - MINUTE
    row_id = tooltip.get_attribute("data-bucket")
    page.keyboard.press("Enter")
    drawer.wait_for(state="visible")
    assert page.locator("#kv-drawer-title").inner_text() == row_id
    page.locator("#kv-bucket-detail .kv-section").first.wait_for()
    page.keyboard.press("Escape")
    drawer.wait_for(state="hidden")

    # The series switch changes the picture (and the URL).
    page.locator("#kv-series label", has_text="Reads").click()
    page.wait_for_url(re.compile(r"series=reads"))
    ready(page, "reads")
    assert bright(pixel(page, reads, columns[1]))
    assert dark(pixel(page, reads, columns[2]))
    assert hot not in page.evaluate("window.keyviz.rowIds()")
    page.screenshot(path=str(artifacts_dir / "keyviz-reads.png"))
    page.locator("#kv-series label", has_text="Writes").click()
    ready(page, "writes")

    # Brush: drag over a time x key rectangle; the page asks the server for exactly that.
    first = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[2]})")
    last = page.evaluate(f"window.keyviz.cellCenter('{hot}', {columns[4]})")
    with page.expect_request(
        lambda r: "/api/keyviz/matrix" in r.url and "start_key=" in r.url
    ) as req:
        page.mouse.move(first["x"], first["y"] - 8)
        page.mouse.down()
        page.mouse.move(last["x"], last["y"] + 8, steps=8)
        page.mouse.up()
    query = dict(re.findall(r"[?&]([a-z_]+)=([^&]*)", req.value.url))
    assert int(query["from"]) < columns[2] < columns[4] < int(query["to"])
    assert int(query["from"]) > columns[1]
    assert int(query["to"]) < columns[5]
    ready(page, "writes")
    assert page.evaluate("window.keyviz.columns()") == columns[2:5]
    zoomed = page.evaluate("window.keyviz.rowIds()")
    assert hot in zoomed
    assert len(zoomed) < rows
    assert "start_key=" in page.url
    assert page.locator("#kv-zoom-label").is_visible()
    assert page.locator("#kv-live").is_disabled()
    page.screenshot(path=str(artifacts_dir / "keyviz-zoomed.png"))
    # Back returns to the whole view.
    page.locator("#kv-back").click()
    until(page, "!location.search.includes('start_key')")
    ready(page, "writes")
    assert len(page.evaluate("window.keyviz.columns()")) == 6

    # Exports of the current matrix.
    with page.expect_download() as download:
        page.locator("#kv-export-csv").click()
    csv = Path(download.value.path()).read_text().splitlines()
    assert csv[0].startswith("bucket_id,start,end,label,")
    assert any(line.startswith(f"{hot},") and ",500," in line + "," for line in csv)
    with page.expect_download() as download:
        page.locator("#kv-export-png").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.console_errors == []
    assert page.bad_resources == []


def test_a_return_visit_asks_for_the_matrix_from_the_head_and_draws_that_answer(
    portal_factory, page, devcluster_factory, tmp_path
):
    cluster, columns, portal = served_history(portal_factory, devcluster_factory, tmp_path)
    portal.login(page)
    hot = bucket(cluster, HOT)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/keyviz/matrix" in r.url else None)

    # First visit: the page does not know its width yet, so it asks after layout.
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    assert page.evaluate("window.keyviz.timing.early") is False
    assert len(asked) == 1
    # Once the totals tables below the map are filled the page is taller than the window;
    # a scrollbar must not change the width the next visit asks with.
    until(page, "document.querySelector('#kv-row-totals tbody').rows.length > 0")
    page.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 300)))")
    assert page.evaluate("document.documentElement.scrollHeight > innerHeight")
    # The events of the window have arrived too (a reload would abort that request).
    until(page, "document.getElementById('kv-events').dataset.loaded === 'true'")
    # Return visit: the request leaves from <head>, once, and is the one drawn.
    asked.clear()
    page.reload()
    ready(page, "writes")
    assert page.evaluate("window.keyviz.timing.early") is True
    assert len(asked) == 1
    assert bright(pixel(page, hot, columns[3]))
    until(page, "document.getElementById('kv-events').dataset.loaded === 'true'")
    # A stale width (the window was resized): that request is dropped, the page asks anew.
    page.evaluate("localStorage.setItem('keyviz.cols', '61')")
    asked.clear()
    page.reload()
    ready(page, "writes")
    assert page.evaluate("window.keyviz.timing.early") is False
    assert len(asked) == 2
    assert "cols=61&" in asked[0]  # the head asked with the stored width
    assert "cols=61&" not in asked[1]
    assert bright(pixel(page, hot, columns[3]))
    assert page.console_errors == []
    assert all("/api/keyviz/matrix" in r and "cols=61" in r for r in page.bad_resources)


def wait_columns(page, count: int, timeout_s: float) -> list[int]:
    until(page, f"window.keyviz.liveDraws.length >= {count}", timeout=int(timeout_s * 1000))
    found: list[int] = [d["column_unix_ms"] for d in page.evaluate("window.keyviz.liveDraws")]
    return found


def test_live_columns_arrive_within_two_steps_and_a_split_adds_its_row(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(profile="design", timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    time.sleep(3.5 * step / 1000)  # a few columns of history
    page.goto(portal.url + "/keyviz/")
    ready(page)
    until(page, "document.getElementById('kv-live-status').dataset.state === 'live'")
    page.evaluate("window.__sameDocument = true")
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    cluster.inject([Op(leader, "write", HOT, count=40)])
    started = time.monotonic()
    first = wait_columns(page, 1, 2 * step / 1000 + 1.5)
    waited = time.monotonic() - started
    assert waited < 2 * step / 1000 + 1.0, waited
    draws = page.evaluate("window.keyviz.liveDraws")
    # Each live column is on screen within two steps of the end of its window, and
    # soon after the poller emitted it.
    assert all(d["drawn_unix_ms"] - d["column_unix_ms"] < 2 * step for d in draws), draws
    assert draws[0]["drawn_unix_ms"] - draws[0]["emitted_unix_ms"] < 1_000
    wait_columns(page, 3, 3 * step / 1000 + 2)
    columns = page.evaluate("window.keyviz.columns()")
    assert columns[-1] > first[0]
    assert all(b - a == step for a, b in zip(columns[-3:], columns[-2:], strict=False))
    until(page, f"window.keyviz.rowIds().includes('{bucket(cluster, HOT)}')")
    page.screenshot(path=str(artifacts_dir / "keyviz-live.png"))

    # A split: the new row appears in key order without a reload.
    _, right = cluster.split_route(route.route_id, HOT)
    new_row = f"route:{right}"
    cluster.inject([Op(leader, "write", HOT, count=60)])
    until(page, f"window.keyviz.rowIds().includes('{new_row}')", timeout=5_000)
    ids: list[Any] = page.evaluate("window.keyviz.rowIds()")
    assert ids.index(f"route:{route.route_id}") < ids.index(new_row)
    assert page.evaluate("window.__sameDocument") is True
    # Its hot cell is drawn where the traffic went.
    until(
        page,
        f"""(() => {{
            const k = window.keyviz;
            const t = k.columns().find((t) => k.value('{new_row}', t) > 0);
            return t !== undefined && k.pixel('{new_row}', t).reduce((a, b) => a + b) > 400;
        }})()""",
    )
    page.locator("#kv-notice").wait_for()
    page.screenshot(path=str(artifacts_dir / "keyviz-split.png"))

    # A dropped connection reconnects with backoff and fills the gap from the matrix API.
    page.evaluate("window.keyviz.dropConnection()")
    until(page, "document.getElementById('kv-live-status').dataset.state === 'down'")
    time.sleep(2.2 * step / 1000)
    until(page, "document.getElementById('kv-live-status').dataset.state === 'live'")
    before = len(page.evaluate("window.keyviz.liveDraws"))
    wait_columns(page, before + 2, 5 * step / 1000)
    columns = page.evaluate("window.keyviz.columns()")
    assert all(b - a == step for a, b in zip(columns[-8:], columns[-7:], strict=False)), columns[
        -8:
    ]
    # The matrix came in the narrowest integer type its values fit; a live value past it
    # (2^16 and more) is kept, not wrapped (the design profile may estimate it: > 65535).
    cluster.inject([Op(leader, "write", HOT, count=70_000)])
    hot = bucket(cluster, HOT)
    until(page, f"window.keyviz.columns().some((t) => window.keyviz.value('{hot}', t) > 65535)")
    assert page.console_errors == []
    assert page.bad_resources == []


def test_a_stopped_node_shows_the_banner_and_its_cells_as_unknown(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    other = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    time.sleep(3.5 * step / 1000)
    page.goto(portal.url + "/keyviz/")
    ready(page)
    until(page, "document.getElementById('kv-live-status').dataset.state === 'live'")
    hot = bucket(cluster, HOT)
    cluster.inject([Op(other, "write", HOT, count=50)])
    until(page, f"window.keyviz.rowIds().includes('{hot}')")
    # (The banner may carry merge warnings of a cluster this young, but no failure.)
    assert page.get_by_test_id("kv-node-banner").count() == 0

    cluster.stop_node(leader)
    banner = page.get_by_test_id("kv-node-banner")
    banner.wait_for(state="visible", timeout=10_000)
    assert "2 of 3 nodes responded." in banner.inner_text()
    failed = banner.locator(f"li[data-node='{leader}']")
    assert "UNAVAILABLE" in failed.inner_text()
    # Traffic through a live node after the stop: the row of the group the stopped node
    # led is unknown (it may have counted more), drawn hatched, and the tooltip says who.
    for _ in range(3):
        cluster.inject([Op(other, "write", HOT, count=50)])
        time.sleep(step / 1000)
    until(
        page,
        f"window.keyviz.columns().some((t) => window.keyviz.flags('{hot}', t) & 8)",
        timeout=10_000,
    )
    t = page.evaluate(
        f"window.keyviz.columns().findLast((t) => window.keyviz.flags('{hot}', t) & 8)"
    )
    at = page.evaluate(f"window.keyviz.cellCenter('{hot}', {t})")
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator("#kv-tooltip")
    tooltip.wait_for(state="visible")
    assert f"unknown: {leader} did not report this column" in tooltip.inner_text()
    assert page.locator("#kv-summary .kv-bad").inner_text().strip().startswith("· 2 of 3 nodes")
    page.screenshot(path=str(artifacts_dir / "keyviz-unknown-live.png"))
    assert page.console_errors == []


def three_routes(cluster: DevCluster) -> dict[str, tuple[bytes, bytes]]:
    return {f"route:{r.route_id}": (r.start, r.end) for r in cluster.routes()[:3]}


def test_unknown_cells_look_different_from_idle_and_name_who_did_not_report(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster = devcluster_factory(routes=8)
    portal = serve(portal_factory, cluster, tmp_path)
    rows = three_routes(cluster)
    busy, gap, _ = list(rows)
    now = int(time.time() * 1000) // MINUTE * MINUTE
    columns = [now - (8 - i) * MINUTE for i in range(6)]
    stored = []
    for i, t in enumerate(columns):
        cells = [[busy, 40 + i, 0]]
        if i == 1:
            cells.append([gap, 5, 0])  # the gap row has traffic once: it has a row
        if i == 3:
            # n2 led the gap row's group and did not report this column: unknown, not 0.
            cells.append([gap, 0, 8])
        stored.append({"t": t, "step": MINUTE, "cells": cells, "missing": ["n2"] if i == 3 else []})
    fill_portal_store(portal, store_doc(rows, stored))
    portal.login(page)
    page.goto(portal.url + "/keyviz/?live=0")
    ready(page, "writes")
    assert page.evaluate(f"window.keyviz.flags('{gap}', {columns[3]})") == 8
    idle, unknown = pixel(page, gap, columns[2]), pixel(page, gap, columns[3])
    assert dark(idle)
    assert not dark(unknown)
    assert max(abs(a - b) for a, b in zip(idle, unknown, strict=True)) > 30
    # Not grey: the unknown colour has a hue (it is --kv-unknown, a teal).
    assert max(unknown) - min(unknown) > 20
    page.screenshot(path=str(artifacts_dir / "keyviz-unknown.png"))
    at = page.evaluate(f"window.keyviz.cellCenter('{gap}', {columns[3]})")
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator("#kv-tooltip")
    tooltip.wait_for(state="visible")
    assert tooltip.get_attribute("data-unknown") == "true"
    assert "unknown: n2 did not report this column" in tooltip.inner_text()
    page.mouse.move(5, 5)
    # Exports write the unknown cell as empty (CSV) / null (JSON), not as 0.
    with page.expect_download() as download:
        page.locator("#kv-export-csv").click()
    lines = Path(download.value.path()).read_text().splitlines()
    [line] = [x for x in lines if x.startswith(f"{gap},")]
    # Per column: the value, then the cell's flags (the CSV carries soft/conflict/unknown).
    fields = line.split(",")[-12:]
    assert fields[0::2] == ["0", "5", "0", "", "0", "0"]
    assert fields[1::2][3] == "unknown"
    with page.expect_download() as download:
        page.locator("#kv-export-json").click()
    exported = json.loads(Path(download.value.path()).read_text())
    [row] = [r for r in exported["rows"] if r["bucket_id"] == gap]
    assert row["values"] == [0, 5, 0, None, 0, 0]
    assert row["unknown"] == [3]
    assert page.console_errors == []


def test_a_7_day_window_draws_from_the_15_minute_tier(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    cluster = devcluster_factory(routes=8)
    portal = serve(portal_factory, cluster, tmp_path)
    rows = three_routes(cluster)
    hot, cold, _ = list(rows)
    now = int(time.time() * 1000)
    day3 = (now // 3_600_000 - 72) * 3_600_000  # an hour boundary three days back
    stored = [
        {
            "t": day3 + k * MINUTE,
            "step": MINUTE,
            "cells": [[hot, 1000 if k <= 15 else 1, 0], [cold, 1, 0]],
        }
        for k in range(1, 31)
    ]
    fill_portal_store(portal, store_doc(rows, stored, compact_at_ms=now))
    portal.login(page)
    page.goto(portal.url + "/keyviz/?range=7d&live=0")
    ready(page, "writes")
    assert page.locator("#kv-range input[value='7d']").is_checked()
    assert (
        page.get_by_test_id("kv-summary")
        .inner_text()
        .startswith("2 \u00d7 2 cells · 15 min columns")
    )
    first, second = page.evaluate("window.keyviz.columns()")
    assert (first, second) == (day3 + 15 * MINUTE, day3 + 30 * MINUTE)
    assert page.evaluate(f"window.keyviz.value('{hot}', {first})") == 15_000
    assert bright(pixel(page, hot, first))
    assert not bright(pixel(page, hot, second))
    page.screenshot(path=str(artifacts_dir / "keyviz-7d.png"))
    assert page.console_errors == []


def start_again(portal) -> None:
    """Start a stopped portal again on the same address and database (a deploy, a crash
    and restart): the page must come back by itself."""
    with portal.log.open("ab") as log:
        portal.proc = subprocess.Popen(
            portal.proc.args, cwd=ROOT, env=portal.env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(portal.url + "/static/css/portal.css", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the portal did not come back:\n{portal.log.read_text()[-2000:]}")


PILL = "document.getElementById('kv-live-status').dataset.state"


def outage_free(errors: list[str]) -> list[str]:
    """Console errors other than Chromium's log of each failed reconnection attempt."""
    return [e for e in errors if not e.startswith("WebSocket connection to ")]


def test_live_resumes_by_itself_after_the_nodes_and_then_the_portal_go_away(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    time.sleep(2.5 * step / 1000)
    page.goto(portal.url + "/keyviz/")
    ready(page)
    until(page, f"{PILL} === 'live'")
    page.evaluate("window.__sameDocument = true")
    cluster.inject([Op(leader, "write", HOT, count=30)])
    wait_columns(page, 2, 6)

    # Every node goes away: no column arrives, and the pill stops saying "live".
    for node in cluster.nodes:
        cluster.stop_node(node.node_id)
    until(page, f"{PILL} !== 'live'", timeout=30_000)
    assert "no column" in page.locator("#kv-live-status").inner_text()
    page.screenshot(path=str(artifacts_dir / "keyviz-nodes-down.png"))
    for node in cluster.nodes:
        cluster.start_node(node.node_id)
    drawn = len(page.evaluate("window.keyviz.liveDraws"))
    wait_columns(page, drawn + 2, 30)
    until(page, f"{PILL} === 'live'", timeout=10_000)

    # The portal itself goes away and comes back: the socket reconnects with backoff, the
    # gap is refetched from the matrix API and live resumes, without a reload.
    portal.stop()
    until(page, f"{PILL} !== 'live'", timeout=10_000)
    start_again(portal)
    restarted = int(time.time() * 1000)
    until(page, f"{PILL} === 'live'", timeout=45_000)
    leader = cluster.group(route.group_id).leader
    cluster.inject([Op(leader, "write", HOT, count=30)])
    until(page, f"window.keyviz.columns().some((t) => t > {restarted})", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    columns = page.evaluate("window.keyviz.columns()")
    assert columns == sorted(set(columns))
    page.screenshot(path=str(artifacts_dir / "keyviz-resumed.png"))
    assert outage_free(page.console_errors) == []


def test_a_page_opened_while_the_portal_is_down_loads_by_itself_and_is_never_green_on_no_data(
    portal_factory, page, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    page.goto(portal.url + "/keyviz/")
    ready(page)
    portal.stop()
    # The matrix cannot be fetched: "No data", and the pill is not green.
    page.evaluate("window.__sameDocument = true")
    page.locator("#kv-range label", has_text="6 h").click()
    until(page, "document.getElementById('kv-summary').textContent === 'No data'", 15_000)
    assert page.evaluate(PILL) != "live"
    start_again(portal)
    until(page, f"{PILL} === 'live'", timeout=45_000)
    until(page, "document.getElementById('kv-summary').textContent !== 'No data'")
    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("window.keyviz.state.range") == "6h"
    assert outage_free(page.console_errors) == []


def test_a_late_nodes_column_is_amended_in_place_on_the_live_page(
    portal_factory, page, artifacts_dir, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    portal.login(page)
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    hot = bucket(cluster, HOT)
    time.sleep(3.5 * step / 1000)
    page.goto(portal.url + "/keyviz/")
    ready(page)
    until(page, f"{PILL} === 'live'")
    page.evaluate("window.__sameDocument = true")
    other = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    cluster.inject([Op(other, "write", HOT, count=5), Op(leader, "write", HOT, count=40)])
    until(page, f"window.keyviz.rowIds().includes('{hot}')")
    # The leader answers late: its columns miss their finalisation and arrive after it.
    cluster.set_fault(leader, delay_s=2.5 * step / 1000, methods=["GetKeyVizMatrix"])
    for _ in range(4):
        cluster.inject([Op(other, "write", HOT, count=5), Op(leader, "write", HOT, count=40)])
        time.sleep(step / 1000)
    # Each column was published without the leader's cells (it was late) and amended
    # when they came: the page replaced those columns in place, so it shows what the
    # matrix API (the store) holds for them, the leader's 40 writes included.
    until(page, "window.keyviz.amended >= 2", timeout=15_000)
    cluster.clear_fault(leader)
    with_leader = f"window.keyviz.columns().filter((t) => window.keyviz.value('{hot}', t) >= 40)"
    until(page, f"{with_leader}.length >= 2", timeout=15_000)
    time.sleep(3 * step / 1000)  # those columns settle: newer ones push them 3 steps back
    shown = page.evaluate(
        f"window.keyviz.columns().map((t) => [t, window.keyviz.value('{hot}', t)])"
    )
    stored = page.request.get(
        f"{portal.url}/api/keyviz/matrix?from={shown[0][0] - step + 1}&to={shown[-1][0] + 1}"
    ).json()
    [row] = [r for r in stored["rows"] if r["bucket_id"] == hot]
    by_time = dict(zip(stored["column_unix_ms"], row["values"], strict=True))
    settled = [(t, v) for t, v in shown if v and t <= shown[-1][0] - 3 * step]
    assert settled == [(t, by_time[t]) for t, _ in settled]
    assert sum(1 for _, v in settled if v >= 40) >= 2
    assert page.evaluate("window.__sameDocument") is True
    columns = page.evaluate("window.keyviz.columns()")
    assert columns == sorted(set(columns))
    page.screenshot(path=str(artifacts_dir / "keyviz-amended.png"))
    assert page.console_errors == []


def test_a_live_7_day_view_folds_the_newest_steps_into_its_15_minute_column(
    portal_factory, page, devcluster_factory, tmp_path
):
    step = 1_000
    cluster = devcluster_factory(timers=True, step_ms=step)
    portal = serve(portal_factory, cluster, tmp_path)
    rows = three_routes(cluster)
    old = next(iter(rows))
    now = int(time.time() * 1000)
    day3 = (now // 3_600_000 - 72) * 3_600_000
    stored = [{"t": day3 + MINUTE, "step": MINUTE, "cells": [[old, 7, 0]]}]
    fill_portal_store(portal, store_doc(rows, stored, compact_at_ms=now))
    portal.login(page)
    route = cluster.route_for_key(HOT)
    leader = cluster.group(route.group_id).leader
    hot = bucket(cluster, HOT)
    page.goto(portal.url + "/keyviz/?range=7d")
    ready(page)
    until(page, f"{PILL} === 'live'")
    assert page.evaluate("window.keyviz.columns()")[0] == day3 + 15 * MINUTE
    for _ in range(3):
        cluster.inject([Op(leader, "write", HOT, count=10)])
        time.sleep(step / 1000)
    # The nodes' 1 s columns are summed into the current 15 min column, after the old one.
    until(
        page,
        f"""(() => {{
            const k = window.keyviz, cols = k.columns();
            return cols.length === 2 && k.value('{hot}', cols[1]) >= 30;
        }})()""",
        timeout=15_000,
    )
    assert page.console_errors == []
