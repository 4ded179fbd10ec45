"""Health, readiness, metrics and security headers: what operators and proxies see."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devcluster.pytest_plugin import TEST_TOKEN

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def get(url: str, token: str = "") -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TEST_TOKEN)
    return path


def test_healthz_and_readyz_when_everything_answers(devcluster, portal_factory, token_file):
    portal = portal_factory(
        ["--nodes", devcluster.node("n1").address, "--nodeTokenFile", str(token_file)]
    )
    status, _, body = get(portal.url + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = get(portal.url + "/readyz")
    doc = json.loads(body)
    assert status == 200
    assert doc["ready"] is True
    assert doc["failed"] == []
    assert doc["checks"]["database"]["vendor"] == "sqlite"
    assert doc["checks"]["channel_layer"]["backend"] == "InMemoryChannelLayer"
    assert doc["checks"]["nodes"] == {**doc["checks"]["nodes"], "ok": True, "known": 3}
    assert TEST_TOKEN not in body.decode()


def test_readyz_names_the_failed_check_when_no_node_answers(portal_factory):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    status, headers, body = get(portal.url + "/readyz")
    doc = json.loads(body)
    assert status == 503
    assert doc["failed"] == ["nodes"]
    assert doc["checks"]["nodes"]["error"] == "no seed answered GetClusterOverview"
    assert "no-cache" in headers["Cache-Control"]


def test_pages_carry_a_csp_without_inline_scripts_and_framing_is_refused(portal_factory):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    _, headers, _ = get(portal.url + "/login/")
    csp = headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", csp)
    assert script_src is not None
    assert script_src.group(1).split() == ["'self'"]
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_metrics_aggregate_every_process_sharing_the_data_directory(
    devcluster, portal_factory, tmp_path, token_file
):
    # Two portal processes, one metrics directory (as `serve` sets it up per data dir).
    shared = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    args = ["--nodes", devcluster.node("n1").address, "--nodeTokenFile", str(token_file)]
    first, second = portal_factory(args, env), portal_factory(args, env)
    # Each process has its own database here; a scraper holds an API token.
    token_a = first.manage("create_api_token", first.admin_username).strip()
    token_b = second.manage("create_api_token", second.admin_username).strip()
    for _ in range(3):
        assert get(first.url + "/api/raft/groups", token_a)[0] == 200
    assert get(second.url + "/api/raft/groups", token_b)[0] == 200
    # No token, no metrics.
    status, _, anonymous = get(second.url + "/metrics")
    assert status == 401
    assert b"elastickv_admin_request_seconds" not in anonymous
    _, headers, body = get(second.url + "/metrics", token_b)
    text = body.decode()
    assert headers["Content-Type"].startswith("text/plain")
    served = re.search(
        r'elastickv_admin_request_seconds_count\{method="GET",status="200",view="cluster:api-raft-groups"\} (\S+)',
        text,
    )
    assert served is not None
    assert float(served.group(1)) == 4.0  # three on the first process, one on the second
    assert re.search(
        r'elastickv_admin_node_rpc_seconds_count\{method="GetRaftGroups",node="[^"]+",outcome="ok"\}',
        text,
    )
    assert 'elastickv_admin_fanout_seconds_count{method="GetRaftGroups"}' in text


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ELASTICKV_ADMIN", "SECRET_KEY"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "SECRET_KEY": "x7#kq!9vR2mZ@pL4wN8eT1yU6iO3aS5dF0gH2jK4lQ7zX9cV1bN3mM5",
            "ELASTICKV_ADMIN_DATA_DIR": str(tmp_path),
            "ELASTICKV_ADMIN_TLS": "true",
            "ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS": "1",
            "ELASTICKV_ADMIN_AUDIT_KEY": "audit-key-for-check-deploy-0123456789abcdef",
            "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "token-hash-key-for-check-deploy-0123456789",
            "ELASTICKV_ADMIN_SECRETS_KEY": "secrets-key-for-check-deploy-0123456789abcd",
            "ALLOWED_HOSTS": "portal.example.com",
            "ELASTICKV_ADMIN_NODES": "10.0.0.1:50051",
            "ELASTICKV_ADMIN_INSECURE_NO_AUTH": "",
        }
    )
    token = tmp_path / "token"
    token.write_text("node-token")
    env["ELASTICKV_ADMIN_NODE_TOKEN_FILE"] = str(token)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
