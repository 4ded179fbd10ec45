"""Test tiers, the CI rule that nothing may be skipped, and the hypothesis profiles.

Tiers are markers: unit (unmarked), integration, services, browser, real_node.
A tier whose prerequisites are missing skips locally; under CI=true any skip
other than the real_node tier (which needs ELASTICKV_BIN) fails the run. Under
pytest-xdist (-n) the workers tag each report with its tier and the controller
counts them, so the summary and the rule cover every worker.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.helpers import require

pytest_plugins = ["devcluster.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ELASTICKV_ADMIN_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIERS = ("integration", "services", "browser", "real_node")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Hypothesis: few examples while developing, more under CI=true, there derandomized (the
# same examples on every run, so a red CI run reproduces) and without the example database.
# No deadline in either: the machine's load must not fail a property. HYPOTHESIS_PROFILE
# picks one explicitly. Tests set max_examples themselves only where an example is costly.
hypothesis_settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))

_outcomes: dict[str, Counter[str]] = {}
_forbidden_skips: list[str] = []


def tier_of(item: pytest.Item) -> str:
    for tier in TIERS:
        if item.get_closest_marker(tier):
            return tier
    return "unit"


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    # user_properties travel with the report from an xdist worker to the controller. A new
    # list: the report's is the item's own, shared by its setup, call and teardown reports.
    report.user_properties = [*report.user_properties, ("tier", tier_of(item))]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Counts outcomes per tier: in the controller for an xdist run, else in the process."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        tier = str(dict(report.user_properties).get("tier", "unit"))
        _outcomes.setdefault(tier, Counter())[report.outcome] += 1
        if report.skipped and tier != "real_node":
            _forbidden_skips.append(report.nodeid)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not _outcomes or _is_xdist_worker(config):
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
    if _is_xdist_worker(session.config):
        return  # the controller, which sees every worker's reports, decides
    if IN_CI and _forbidden_skips and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _no_environment_leaks() -> Iterator[None]:
    """What a test writes to os.environ (the command line maps its flags there) is undone
    after it: under xdist the order of tests differs, and a --nodeTokenFile left behind by
    tests/unit/test_cli.py failed the system checks of a later test's manage.py."""
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    for name, value in saved.items():
        if name != "PYTEST_CURRENT_TEST" and os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _own_audit_anchor(tmp_path: Path, settings: Any) -> None:
    """Each test its own audit anchor file: the test database is emptied between tests, an
    anchor left by an earlier test would report its events as a cut tail."""
    settings.AUDIT_ANCHOR_FILE = tmp_path / "audit-anchor"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = ARTIFACTS / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the real portal process: `elastickv-admin serve` under daphne ---------------------------


PORTAL_ADMIN = "admin"


class PortalProcess:
    def __init__(
        self, url: str, proc: subprocess.Popen[bytes], log: Path, env: dict[str, str]
    ) -> None:
        self.url = url
        self.proc = proc
        self.log = log
        self.env = env
        self.admin_username = PORTAL_ADMIN
        self.admin_password = ""

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """`python manage.py ...` against this portal's database; returns stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def create_admin(self) -> None:
        """The first admin, the documented way: createsuperuser --noinput."""
        self.admin_password = "portal-admin-" + secrets.token_urlsafe(9)
        self.manage(
            "createsuperuser",
            "--noinput",
            env={
                "DJANGO_SUPERUSER_USERNAME": self.admin_username,
                "DJANGO_SUPERUSER_PASSWORD": self.admin_password,
                "DJANGO_SUPERUSER_EMAIL": "admin@example.invalid",
            },
        )

    def login(self, page: Any, username: str = "", password: str = "") -> None:
        """Sign in through the real login form in the browser."""
        page.goto(self.url + "/login/")
        page.fill("input[name=username]", username or self.admin_username)
        page.fill("input[name=password]", password or self.admin_password)
        page.click("form button[type=submit]")
        page.wait_for_load_state()
        assert "/login/" not in page.url, f"login as {username or self.admin_username} failed"

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


def _flag_env(args: list[str]) -> dict[str, str]:
    """The environment `serve` derives from its flags, for manage.py next to it."""
    from elastickv_admin.cli import BOOL_FLAG_ENV, FLAG_ENV, build_parser

    parsed = build_parser().parse_args(["serve", *args])
    env = {
        name: str(getattr(parsed, flag))
        for flag, name in FLAG_ENV.items()
        if getattr(parsed, flag, None)
    }
    env.update(
        {name: "true" for flag, name in BOOL_FLAG_ENV.items() if getattr(parsed, flag, False)}
    )
    return env


PORTAL_SECRETS = {
    "SECRET_KEY": "browser-test-secret-key-0123456789abcdef",
    "ELASTICKV_ADMIN_AUDIT_KEY": "browser-test-audit-key-0123456789abcdef",
    "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "browser-test-token-hash-key-0123456789",
    "ELASTICKV_ADMIN_SECRETS_KEY": "browser-test-secrets-key-0123456789abc",
}


def start_portal(
    data_dir: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    create_admin: bool = True,
) -> PortalProcess:
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICKV_ADMIN_")}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    for name, value in PORTAL_SECRETS.items():
        environ.setdefault(name, value)
    # The tests talk plain HTTP to 127.0.0.1.
    environ["ELASTICKV_ADMIN_SECURE_COOKIES"] = "false"
    environ["ELASTICKV_ADMIN_DATA_DIR"] = str(data_dir)
    # Pages wait for every node's answer (past the 5 s RPC deadline), so a loaded test
    # machine never turns a healthy node into "waiting"; budget tests set their own.
    environ["ELASTICKV_ADMIN_PAGE_BUDGET"] = "6s"
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
                portal = PortalProcess(url, proc, log, {**environ, **_flag_env(args)})
                if create_admin:
                    portal.create_admin()
                return portal
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"portal did not start within 60 s:\n{log.read_text()}")


@pytest.fixture
def portal_factory(tmp_path: Path) -> Iterator[Callable[..., PortalProcess]]:
    started: list[PortalProcess] = []

    def factory(
        args: list[str], env: dict[str, str] | None = None, *, create_admin: bool = True
    ) -> PortalProcess:
        portal = start_portal(
            tmp_path / f"portal{len(started)}", args, env, create_admin=create_admin
        )
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
    yield from open_page(browser)


def open_page(browser: Any, **options: Any) -> Iterator[Any]:
    """A page in its own browser context (``options`` go to new_context: colour scheme,
    time zone...) that records JavaScript errors and failed sub-resources."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **options)
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


# --- personas: users holding roles, API tokens, signed-in clients ------------------------------
# Tests that use these need the database: mark them django_db (transaction=True for async
# tests, whose database work runs in other threads).

PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def make_user() -> Callable[..., Any]:
    from django.contrib.auth.models import Group, User

    from accounts.roles import ensure_role_groups

    def make(username: str, *roles: str, superuser: bool = False, password: str = PASSWORD) -> User:
        ensure_role_groups()
        if superuser:
            return User.objects.create_superuser(username, password=password)
        user = User.objects.create_user(username, password=password)
        user.groups.set(Group.objects.filter(name__in=roles))
        return user

    return make


@pytest.fixture
def admin_user(make_user: Callable[..., Any]) -> Any:
    """A superuser: every role."""
    return make_user("root-admin", superuser=True)


@pytest.fixture
def api_token_for() -> Callable[..., str]:
    from accounts.actions import do_create_api_token

    def make(user: Any, *, read_only: bool = True) -> str:
        return do_create_api_token(user, user, "test", read_only=read_only).plaintext

    return make


@pytest.fixture
def viewer_token(make_user: Callable[..., Any], api_token_for: Callable[..., str]) -> str:
    """A read-only API token of a user holding the viewer role."""
    return api_token_for(make_user("api-viewer", "viewer"))


@pytest.fixture
def viewer_async_client(viewer_token: str) -> Any:
    """An AsyncClient that reads the API as a viewer (Bearer token)."""
    from django.test import AsyncClient

    # AUTHORIZATION, not headers=: AsyncClient turns constructor headers into HTTP_* names.
    return AsyncClient(AUTHORIZATION=f"Bearer {viewer_token}")


@pytest.fixture
def logged_in_page(portal_factory: Callable[..., PortalProcess], page: Any) -> Any:
    """A portal (no nodes reachable) and a browser page signed in as its first admin."""
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    portal.login(page)
    page.portal = portal
    return page


# --- the in-process portal pointed at a devcluster ---------------------------------------------


def _reset_portal_state() -> None:
    from cluster.runtime import reset_runtime

    reset_runtime()


@pytest.fixture
async def portal(
    tmp_path: Path, transactional_db: None, make_user: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """`portal(seeds, **config)`: the portal's settings point at those seeds (with the
    devcluster test token) and a Django AsyncClient signed in as a viewer comes back. The
    node client, discovery and the services' shared state are reset around each use.
    `seeds` may be a DevCluster: its addresses, and its KeyViz step as the portal's."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient, override_settings

    from cluster.runtime import node_client
    from devcluster import DevCluster
    from devcluster.pytest_plugin import TEST_TOKEN
    from elastickv_admin.lib.config import PortalConfig

    token_file = tmp_path / "portal-node-token"
    token_file.write_text(TEST_TOKEN + "\n")
    client = AsyncClient()
    await client.aforce_login(await sync_to_async(make_user)("portal-viewer", "viewer"))
    overrides: list[Any] = []

    def configure(seeds: list[str] | DevCluster, **config: Any) -> Any:
        if isinstance(seeds, DevCluster):
            config.setdefault("keyviz_step_ms", seeds.step_ms)  # as --keyvizStep matches the nodes
            seeds = seeds.addresses
        config.setdefault("node_token_file", str(token_file))
        config.setdefault("rpc_timeout_s", 2.0)
        # Every answer or deadline is awaited unless a test is about the page budget.
        config.setdefault("page_budget_s", config["rpc_timeout_s"] + 1.0)
        override = override_settings(ELASTICKV_ADMIN=PortalConfig(seeds=tuple(seeds), **config))
        override.enable()
        overrides.append(override)
        _reset_portal_state()
        return client

    yield configure
    await node_client().close()
    for override in reversed(overrides):
        override.disable()
    _reset_portal_state()
