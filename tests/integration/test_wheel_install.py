"""The built wheel is the portal: installed into a fresh virtual environment outside the
checkout, `elastickv-admin serve` renders its pages and serves its static files."""

from __future__ import annotations

import http.cookiejar
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import DevCluster
from devcluster.pytest_plugin import TEST_TOKEN
from tests.conftest import PORTAL_SECRETS, ROOT, _free_port

# What the wheel is built from: the working tree, copied, so the build's own files
# (build/, *.egg-info) never land in the checkout.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "test-artifacts",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
)
ADMIN_PASSWORD = "wheel-admin-password-0123"


def _run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(out: Path) -> Path:
    source = out / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    # No build isolation: setuptools comes from the test's environment, no network needed.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out / "dist"),
            str(source),
        ]
    )
    (wheel,) = (out / "dist").glob("elastickv_admin-*.whl")
    return wheel


def install_into_fresh_venv(wheel: Path, target: Path) -> Path:
    """A venv with only the wheel installed; the dependencies (not the project) come from
    the test environment's site-packages, appended after the venv's own via a .pth file.
    A .pth line adds a path without running that directory's .pth files, so the project's
    editable install there stays inactive."""
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
        ).stdout.strip()
    )
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "test-dependencies.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)])
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's python, with the wheel built from this working tree installed."""
    out = tmp_path_factory.mktemp("wheel")
    return install_into_fresh_venv(build_wheel(out), out / "venv")


class InstalledPortal:
    """`elastickv-admin serve` from the installed wheel, in a directory outside the checkout,
    with nothing of the checkout reachable (no PYTHONPATH); data in its default ./var."""

    def __init__(self, python: Path, cluster: DevCluster, workdir: Path) -> None:
        self.python = python
        self.workdir = workdir
        token = workdir / "node-token"
        token.write_text(TEST_TOKEN)
        # Configured through the environment, so `python -m django ...` beside it shares it.
        self.env = {
            "PATH": f"{python.parent}:/usr/bin:/bin",
            "HOME": str(workdir),
            **PORTAL_SECRETS,
            "ELASTICKV_ADMIN_NODES": ",".join(cluster.addresses),
            "ELASTICKV_ADMIN_NODE_TOKEN_FILE": str(token),
            "ELASTICKV_ADMIN_KEYVIZ_STEP": f"{cluster.step_ms}ms",
            "ELASTICKV_ADMIN_SECURE_COOKIES": "false",
            "ELASTICKV_ADMIN_PAGE_BUDGET": "6s",
        }
        port = _free_port()
        self.log = workdir / "portal.log"
        self.proc = subprocess.Popen(
            [str(python.parent / "elastickv-admin"), "serve", "--bindAddr", f"127.0.0.1:{port}"],
            cwd=workdir,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"portal exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"portal did not start within 60 s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def python_run(self, *args: str, env: dict[str, str] | None = None) -> str:
        return _run(
            [str(self.python), *args], cwd=self.workdir, env={**self.env, **(env or {})}
        ).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def installed_portal(installed, devcluster_factory, tmp_path) -> Iterator[InstalledPortal]:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    portal = InstalledPortal(installed, devcluster_factory(), workdir)
    yield portal
    portal.stop()


@pytest.mark.integration
def test_installed_wheel_runs_serve_outside_the_checkout_with_its_data_in_dot_var(
    installed_portal,
):
    where = installed_portal.python_run(
        "-c", "import elastickv_admin; print(elastickv_admin.__file__)"
    )
    assert where.startswith(str(installed_portal.python.parent.parent)), where
    with urllib.request.urlopen(installed_portal.url + "/readyz") as resp:
        assert json.load(resp)["ready"] is True
    # The documented default --dataDir is ./var, not a directory inside site-packages.
    assert (installed_portal.workdir / "var" / "portal.sqlite3").is_file()


@pytest.mark.integration
def test_installed_wheel_serves_login_overview_and_stylesheet_outside_the_checkout(
    installed_portal,
):
    portal = installed_portal
    portal.python_run(
        "-m",
        "django",
        "createsuperuser",
        "--noinput",
        env={
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "DJANGO_SUPERUSER_EMAIL": "admin@example.invalid",
        },
    )
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        with browser.open(portal.url + "/login/") as resp:
            login = resp.read().decode()
    except urllib.error.HTTPError as err:
        pytest.fail(f"the login page answered {err.code}:\n{portal.output()[-3000:]}")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login)
    assert token, "the login page renders its form"
    css = re.search(r'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', login)
    assert css, "the login page links the collected, hashed stylesheet"

    form = {"csrfmiddlewaretoken": token.group(1), "username": "admin"}
    form["password"] = ADMIN_PASSWORD
    request = urllib.request.Request(
        portal.url + "/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": portal.url + "/login/"},
    )
    with browser.open(request) as resp:
        overview = resp.read().decode()
        assert urllib.parse.urlparse(resp.url).path == "/"
    assert "Cluster overview" in overview
    assert "3 of 3 nodes responded" in overview

    with browser.open(portal.url + css.group(1)) as resp:
        assert resp.headers["Content-Type"].startswith("text/css")
        assert b".sidebar" in resp.read()
