"""KeyViz history retention settings: defaults, units, floors, startup errors naming the variable."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from elastickv_admin.settings import _keyviz_retention
from tests.unit.test_settings import load_settings

H = 3_600_000
DAY = 24 * H
NAMES = tuple(f"ELASTICKV_ADMIN_KEYVIZ_RETENTION_{s}" for s in ("FINE", "15M", "1H"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_retention_defaults_are_a_day_a_week_and_thirty_days():
    assert _keyviz_retention() == (DAY, 7 * DAY, 30 * DAY)


def test_retention_accepts_day_and_hour_units(monkeypatch):
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE", "36h")
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_15M", "14d")
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_1H", "90d")
    assert _keyviz_retention() == (36 * H, 14 * DAY, 90 * DAY)


def test_fine_retention_below_a_day_names_the_variable(monkeypatch):
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE", "12h")
    with pytest.raises(
        ImproperlyConfigured, match="RETENTION_FINE must be at least 24h, got '12h'"
    ):
        _keyviz_retention()


def test_coarser_retention_shorter_than_a_finer_one_names_both(monkeypatch):
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE", "3d")
    monkeypatch.setenv("ELASTICKV_ADMIN_KEYVIZ_RETENTION_15M", "2d")
    with pytest.raises(
        ImproperlyConfigured,
        match=r"RETENTION_15M must be at least ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE \(259200 s\)",
    ):
        _keyviz_retention()


def test_bad_retention_is_a_startup_error_naming_the_variable(tmp_path):
    result = load_settings(
        tmp_path, SECRET_KEY="k" * 40, ELASTICKV_ADMIN_KEYVIZ_RETENTION_1H="a month"
    )
    assert result.returncode != 0
    assert "ELASTICKV_ADMIN_KEYVIZ_RETENTION_1H: not a duration: 'a month'" in result.stderr
