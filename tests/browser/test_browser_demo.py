"""The demo as a new operator meets it: `elastickv-admin demo` (what scripts/demo.sh runs)
on a free port and a temporary data directory, in real Chromium.

It must look like production (hundreds of KeyViz rows from every adapter family, a week
of history) and fail like it (a node stopped from the demo controls shows as a degraded
cluster). Screenshots land in test-artifacts/screenshots/demo-*.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.screens import is_dark, is_light, rgb, shoot
from tests.conftest import ROOT, _free_port

pytestmark = pytest.mark.browser

DAY_MS = 86_400_000
FAMILIES = ("!ddb|route|table|", "!sqs|route|", "!s3|", "!txn|", "user:")


@dataclass
class Demo:
    url: str
    data_dir: Path
    password: str
    proc: subprocess.Popen[bytes]
    log: Path

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "elastickv_admin.cli",
                "demo-ctl",
                "--dataDir",
                str(self.data_dir),
                *args,
            ],
            cwd=ROOT,
            env=_environ(),
            capture_output=True,
            text=True,
            timeout=30,
        )


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICKV_ADMIN_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo command as the README gives it, on a free port and a temporary data dir."""
    data_dir = tmp_path_factory.mktemp("demo")
    port = _free_port()
    log = data_dir / "demo.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "elastickv_admin.cli", "demo",
            "--bindAddr", f"127.0.0.1:{port}", "--dataDir", str(data_dir),
        ],
        cwd=ROOT,
        env=_environ(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not serve within 120 s:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/static/css/portal.css", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        found = re.search(r"as admin / (\S+)", log.read_text())
        assert found, f"the demo printed no admin password:\n{log.read_text()}"
        yield Demo(url, data_dir, found.group(1), proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login(page: Any, demo: Demo) -> None:
    page.goto(demo.url + "/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", demo.password)
    page.click("form button[type=submit]")
    page.wait_for_load_state()
    assert "/login/" not in page.url


def matrix(page: Any, demo: Demo, **query: int | str) -> dict[str, Any]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    response = page.request.get(f"{demo.url}/api/keyviz/matrix?{qs}")
    assert response.status == 200, response.text()
    doc: dict[str, Any] = response.json()
    return doc


def until(page: Any, expression: str, timeout: int = 20_000) -> None:
    page.wait_for_function(f"() => ({expression})", timeout=timeout)


def test_demo_heatmap_has_hundreds_of_rows_from_every_key_family(
    demo: Demo, page: Any, artifacts_dir: Path
) -> None:
    login(page, demo)
    banner = page.get_by_test_id("demo-banner")
    assert re.fullmatch(
        r"Demo: synthetic history before \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; profile design",
        banner.inner_text(),
    )
    # The live columns need a few flushes before every route has traffic in them.
    deadline = time.monotonic() + 60
    while True:
        doc = matrix(page, demo, rows=1024)
        if len(doc["rows"]) >= 100 or time.monotonic() > deadline:
            break
        time.sleep(2)
    rows = doc["rows"]
    assert len(rows) >= 100, f"only {len(rows)} rows in the last hour"
    starts = [r["start_text"] for r in rows]
    for family in FAMILIES:
        assert any(s.startswith(family) for s in starts), f"no row of {family} in {starts[:20]}"
    assert {r["label"] for r in rows} >= {"dynamo", "redis", "s3", "sqs"}
    page.goto(demo.url + "/keyviz/?rows=1024")
    until(page, "window.keyviz && window.keyviz.ready")
    until(page, "window.keyviz.rowIds().length >= 100")
    # Live columns arrive over the WebSocket although a frame of 256 rows is over 64 KiB
    # (the limit on what viewers may send).
    until(page, "window.keyviz.liveDraws.length > 0", 30_000)
    ids = page.evaluate("window.keyviz.rowIds()")
    assert {re.sub(r"^route:\d+:|#\d+$", "", i) for i in ids} >= {"dynamo", "redis", "s3", "sqs"}
    assert page.get_by_test_id("demo-banner").is_visible()
    page.screenshot(path=str(artifacts_dir / "demo-keyviz.png"))


def test_demo_pages_in_the_light_and_the_dark_theme(
    demo: Demo, browser: Any, artifacts_dir: Path
) -> None:
    """The demo's Key Visualizer, overview, Hot ranges and Demo card in both themes (the
    browser's preference), with the demo banner: demo-<page>-<theme>.png, from which the
    README's docs/*.png are copied."""
    for theme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme=theme)
        page = context.new_page()
        login(page, demo)
        page.goto(demo.url + "/keyviz/")
        until(page, "window.keyviz && window.keyviz.ready")
        until(page, "window.keyviz.rowIds().length >= 100")
        until(page, "document.getElementById('kv-live-status').dataset.state === 'live'")
        shoot(page, artifacts_dir, f"demo-keyviz-{theme}", full_page=False)
        for name, path in (("overview", "/"), ("hot-ranges", "/keyviz/hot/"), ("card", "/demo/")):
            page.goto(demo.url + path)
            page.wait_for_load_state("networkidle")
            assert page.get_by_test_id("demo-banner").is_visible()
            background = rgb(page, "body")
            assert is_dark(background) if theme == "dark" else is_light(background), name
            shoot(page, artifacts_dir, f"demo-{name}-{theme}", full_page=False)
        context.close()


def test_demo_seven_day_window_is_not_empty(demo: Demo, page: Any) -> None:
    login(page, demo)
    now = int(time.time() * 1000)
    doc = matrix(page, demo, **{"from": now - 7 * DAY_MS, "to": now, "rows": 1024})
    assert len(doc["rows"]) >= 100
    assert sum(sum(r["values"]) for r in doc["rows"]) > 0


def test_demo_stop_n2_from_the_card_shows_a_degraded_cluster(
    demo: Demo, page: Any, artifacts_dir: Path
) -> None:
    login(page, demo)
    page.goto(demo.url + "/")
    until(page, "document.querySelector('[data-testid=responded]') !== null")
    assert page.get_by_test_id("responded").inner_text() == "3 of 3 nodes responded"
    page.goto(demo.url + "/demo/")
    page.get_by_test_id("stop-n2").click()
    page.wait_for_load_state()
    assert page.get_by_test_id("demo-message").inner_text() == "n2 stopped"
    assert "STOPPED" in demo.ctl("status").stdout.splitlines()[1]
    page.goto(demo.url + "/")
    banner = page.get_by_test_id("node-banner")
    assert banner.locator("strong").first.inner_text() == "2 of 3 nodes responded."
    assert page.get_by_test_id("demo-banner").is_visible()
    page.screenshot(path=str(artifacts_dir / "demo-degraded.png"))
    # demo-ctl, from a second terminal, brings it back.
    started = demo.ctl("start", "n2")
    assert started.returncode == 0, started.stderr
    # The portal's channel to n2 reconnects after its backoff, as with a rebooted node.
    deadline = time.monotonic() + 60
    while True:
        page.goto(demo.url + "/")
        answered = page.get_by_test_id("responded").inner_text()
        if answered == "3 of 3 nodes responded" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert answered == "3 of 3 nodes responded"
    # The change is in the audit log, with the user who made it.
    page.goto(demo.url + "/audit/")
    text = page.content()
    assert "demo.control" in text
    assert "node:n2" in text


def test_serve_shows_no_demo_banner_and_has_no_demo_routes(portal_factory, page: Any) -> None:
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    portal.login(page)
    for path in ("/", "/settings/", "/keyviz/"):
        page.goto(portal.url + path)
        assert page.get_by_test_id("demo-banner").count() == 0, path
    assert page.locator("nav.sidebar").get_by_text("Demo cluster").count() == 0
    assert page.goto(portal.url + "/demo/").status == 404
