"""Identical failures in several portal processes sharing PostgreSQL fold into one window
(row locks, not SQLite's single writer): one event at once, one summary with every count."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection

from tests.failure_race import portal_env, race_failures
from tests.helpers import require

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    require(connection.vendor == "postgresql", "DATABASE_URL does not point at PostgreSQL")
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_identical_failures_in_four_processes_fold_into_one_window_on_postgresql():
    report = json.loads(race_failures(portal_env(database_url())))
    assert report["before_flush"] == 1
    assert [d.get("count") for d in report["details"]] == [None, 400]
    assert report["chain_ok"] is True
