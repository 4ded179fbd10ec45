"""Settings come from the environment and fail loudly on bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from elastickv_admin.lib import env

ROOT = Path(__file__).resolve().parents[2]

PRINT_SETTINGS = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "options": db.get("OPTIONS", {}),
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "debug": settings.DEBUG, "secret_len": len(settings.SECRET_KEY),
    "seeds": list(settings.ELASTICKV_ADMIN.seeds),
    "refresh": settings.ELASTICKV_ADMIN.refresh_interval_s,
    "keyviz_step_ms": settings.ELASTICKV_ADMIN.keyviz_step_ms,
    "writes_merge": settings.ELASTICKV_ADMIN.writes_merge,
}))
"""


def load_settings(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Import the production settings module in a fresh interpreter."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("ELASTICKV_ADMIN", "SECRET_KEY"))
    }
    environ.pop("DATABASE_URL", None)
    environ.pop("REDIS_URL", None)
    environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "ELASTICKV_ADMIN_DATA_DIR": str(tmp_path),
            # The keys outside the database (tests/unit/test_access_settings.py covers them).
            "ELASTICKV_ADMIN_AUDIT_KEY": "a" * 40,
            "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "t" * 40,
            "ELASTICKV_ADMIN_SECRETS_KEY": "s" * 40,
        }
    )
    environ.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + PRINT_SETTINGS],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_secret_key_is_a_startup_error_outside_the_demo(tmp_path):
    result = load_settings(tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "demo-secret-key").exists()


def test_demo_generates_a_secret_key_into_the_data_directory_and_reuses_it(tmp_path):
    first = load_settings(tmp_path, ELASTICKV_ADMIN_DEMO="true")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "demo-secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    assert load_settings(tmp_path, ELASTICKV_ADMIN_DEMO="true").returncode == 0
    assert key_file.read_text() == key


def test_secret_key_file_is_read_and_an_empty_file_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("  s3cret-from-file-0123456789  \n")
    ok = load_settings(tmp_path, SECRET_KEY_FILE=str(secret))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["secret_len"] == len("s3cret-from-file-0123456789")
    secret.write_text("\n")
    empty = load_settings(tmp_path, SECRET_KEY_FILE=str(secret))
    assert "is empty" in empty.stderr


def test_default_database_is_sqlite_with_wal_and_immediate_transactions(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40)
    got = json.loads(result.stdout)
    assert got["engine"] == "django.db.backends.sqlite3"
    assert got["name"] == str(tmp_path / "portal.sqlite3")
    assert got["options"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in got["options"]["init_command"]
    assert got["layer"] == "channels.layers.InMemoryChannelLayer"
    assert got["debug"] is False


def test_database_url_and_redis_url_switch_backends(tmp_path):
    result = load_settings(
        tmp_path,
        SECRET_KEY="k" * 40,
        DATABASE_URL="postgres://u:p@db.example:5433/portal",
        REDIS_URL="redis://127.0.0.1:6390/0",
    )
    got = json.loads(result.stdout)
    assert got["engine"] == "django.db.backends.postgresql"
    assert got["name"] == "portal"
    assert got["layer"] == "channels_redis.core.RedisChannelLayer"


def test_bad_boolean_names_the_variable(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, DEBUG="maybe")
    assert "DEBUG must be true or false, got 'maybe'" in result.stderr


def test_bad_refresh_interval_names_the_variable(tmp_path):
    result = load_settings(
        tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL="soon"
    )
    assert "ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL" in result.stderr
    assert "not a duration" in result.stderr


def test_nodes_and_refresh_interval_are_read(tmp_path):
    result = load_settings(
        tmp_path,
        SECRET_KEY="k" * 40,
        ELASTICKV_ADMIN_NODES="10.0.0.1:50051, 10.0.0.2:50051",
        ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL="30s",
    )
    got = json.loads(result.stdout)
    assert got["seeds"] == ["10.0.0.1:50051", "10.0.0.2:50051"]
    assert got["refresh"] == 30.0


def test_keyviz_step_defaults_to_the_nodes_60s_and_writes_sum_by_default(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40)
    got = json.loads(result.stdout)
    assert got["keyviz_step_ms"] == 60_000
    assert got["writes_merge"] == "sum"


@pytest.mark.parametrize(("raw", "ms"), [("1m30s", 90_000), ("500ms", 500), ("auto", None)])
def test_keyviz_step_takes_go_durations_and_auto(tmp_path, raw, ms):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_KEYVIZ_STEP=raw)
    assert json.loads(result.stdout)["keyviz_step_ms"] == ms


def test_bad_keyviz_step_is_a_startup_error_naming_the_variable(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_KEYVIZ_STEP="60")
    assert result.returncode != 0
    assert "ELASTICKV_ADMIN_KEYVIZ_STEP: step '60' has no unit" in result.stderr


@pytest.mark.parametrize(("raw", "policy"), [("dedupe", "dedupe"), ("design", "dedupe")])
def test_writes_merge_dedupe_and_its_old_name_design(tmp_path, raw, policy):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_WRITES_MERGE=raw)
    assert json.loads(result.stdout)["writes_merge"] == policy


def test_bad_writes_merge_is_a_startup_error_naming_the_variable(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_WRITES_MERGE="max")
    assert result.returncode != 0
    assert "ELASTICKV_ADMIN_WRITES_MERGE must be one of sum, dedupe" in result.stderr


def test_env_parsed_names_the_variable_and_falls_back_to_the_default(monkeypatch):
    monkeypatch.delenv("X_TEST_STEP", raising=False)
    assert env.env_parsed("X_TEST_STEP", "7", int) == 7
    monkeypatch.setenv("X_TEST_STEP", "  ")
    assert env.env_parsed("X_TEST_STEP", "7", int) == 7
    monkeypatch.setenv("X_TEST_STEP", "seven")
    with pytest.raises(ImproperlyConfigured, match=r"^X_TEST_STEP: invalid literal"):
        env.env_parsed("X_TEST_STEP", "7", int)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("7d", 604800.0), ("7", 7.0)],
)
def test_durations_accept_units(raw, seconds):
    assert env.parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "-1s", "5 minutes", "s"])
def test_durations_reject_nonsense(raw):
    with pytest.raises(ValueError, match="not a duration"):
        env.parse_duration(raw)


def test_env_int_enforces_minimum(monkeypatch):
    monkeypatch.setenv("X_TEST_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="X_TEST_INT must be at least 1"):
        env.env_int("X_TEST_INT", 5, minimum=1)
    monkeypatch.setenv("X_TEST_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="must be a whole number"):
        env.env_int("X_TEST_INT", 5)


def test_json_log_format_writes_one_json_object_per_line(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICKV_ADMIN")}
    environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "ELASTICKV_ADMIN_DATA_DIR": str(tmp_path),
            "SECRET_KEY": "k" * 40,
            "ELASTICKV_ADMIN_AUDIT_KEY": "a" * 40,
            "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "t" * 40,
            "ELASTICKV_ADMIN_SECRETS_KEY": "s" * 40,
            "LOG_FORMAT": "json",
        }
    )
    code = (
        "import django, logging; django.setup()\n"
        "from audit.context import AuditContext, audit_context\n"
        "with audit_context(AuditContext(request_id='req-123')):\n"
        "    logging.getLogger('probe').warning('hello', extra={'node': 'n1'})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert (record["level"], record["logger"], record["message"], record["node"]) == (
        "WARNING",
        "probe",
        "hello",
        "n1",
    )
    assert record["request_id"] == "req-123"


def test_unknown_log_format_is_refused(tmp_path):
    result = load_settings(tmp_path, SECRET_KEY="k" * 40, LOG_FORMAT="xml")
    assert "LOG_FORMAT must be plain or json, got 'xml'" in result.stderr


def test_servestatic_system_checks_run_and_refuse_a_bad_setting(settings):
    """servestatic is an installed app, so `check` (run by serve) validates its settings."""
    from django.core import checks

    settings.SERVESTATIC_MAX_AGE = -1
    assert "servestatic.E014" in [message.id for message in checks.run_checks()]
