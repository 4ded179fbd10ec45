"""Test tiers and the CI rule that nothing may be skipped.

Tiers are markers: unit (unmarked), integration, services, browser, real_node.
A tier whose prerequisites are missing skips locally; under CI=true any skip
other than the real_node tier (which needs ELASTICKV_BIN) fails the run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require

pytest_plugins = ["devcluster.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ELASTICKV_ADMIN_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIERS = ("integration", "services", "browser", "real_node")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_outcomes: dict[str, Counter[str]] = {}
_forbidden_skips: list[str] = []


def tier_of(item: pytest.Item) -> str:
    for tier in TIERS:
        if item.get_closest_marker(tier):
            return tier
    return "unit"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        tier = tier_of(item)
        _outcomes.setdefault(tier, Counter())[report.outcome] += 1
        if report.skipped and tier != "real_node":
            _forbidden_skips.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    terminalreporter.section("tiers")
    for tier in ("unit", *TIERS):
        if tier in _outcomes:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(_outcomes[tier].items()))
            terminalreporter.write_line(f"{tier:12} {counts}")
    if IN_CI and _forbidden_skips:
        terminalreporter.write_line(
            f"CI forbids skips outside the real_node tier; {len(_forbidden_skips)} skipped:",
            red=True,
        )
        for nodeid in _forbidden_skips:
            terminalreporter.write_line(f"  {nodeid}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _forbidden_skips and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = ARTIFACTS / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the real portal process: `elastickv-admin serve` under daphne ---------------------------


class PortalProcess:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_portal(
    data_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> PortalProcess:
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICKV_ADMIN_")}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    environ.setdefault("SECRET_KEY", "browser-test-secret-key-0123456789abcdef")
    environ.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "portal.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "elastickv_admin.cli",
            "serve",
            "--bindAddr",
            f"127.0.0.1:{port}",
            "--dataDir",
            str(data_dir),
            *args,
        ],
        cwd=ROOT,
        env=environ,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"portal exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/static/css/portal.css", timeout=1):
                return PortalProcess(url, proc, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"portal did not start within 60 s:\n{log.read_text()}")


@pytest.fixture
def portal_factory(tmp_path: Path) -> Iterator[Callable[..., PortalProcess]]:
    started: list[PortalProcess] = []

    def factory(args: list[str], env: dict[str, str] | None = None) -> PortalProcess:
        portal = start_portal(tmp_path / f"portal{len(started)}", args, env)
        started.append(portal)
        return portal

    yield factory
    for portal in started:
        portal.stop()


# --- headless Chromium through Playwright --------------------------------------------------

CHROMIUM = os.environ.get("ELASTICKV_ADMIN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope: sync Playwright keeps an event loop running in this thread, which must be
# gone before the asyncio tests of another module run.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    # JavaScript errors, and sub-resources (scripts, styles, XHR) that failed to load.
    errors: list[str] = []
    bad_resources: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda resp: (
            bad_resources.append(f"{resp.status} {resp.url}")
            if resp.status >= 400 and resp.request.resource_type != "document"
            else None
        ),
    )
    page.on("requestfailed", lambda req: bad_resources.append(f"failed {req.url}"))
    page.console_errors = errors
    page.bad_resources = bad_resources
    yield page
    context.close()
