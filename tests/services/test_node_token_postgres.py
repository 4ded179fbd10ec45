"""The node token across portal processes sharing PostgreSQL: concurrent starts make one
rotation, and a change committed by one process reaches another's token store within
SYNC_INTERVAL_S."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.test import override_settings

from cluster import node_token
from cluster.models import NodeTokenRecord
from cluster.node_token import SYNC_INTERVAL_S, DatabaseTokenStore
from elastickv_admin.lib.config import PortalConfig
from tests.helpers import require
from tests.node_token_race import ROOT, portal_env, race_starts

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
CURRENT = "the-current-node-token-0123456789"
NEXT = "started-by-another-process-0123456789"
START_ELSEWHERE = f"""
import django
django.setup()
from cluster.node_token import do_start_rotation
do_start_rotation("portal-b", {NEXT!r}, known_addresses=["n:1"])
"""


def database_url() -> str:
    require(connection.vendor == "postgresql", "DATABASE_URL does not point at PostgreSQL")
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "node-token"
    path.write_text(CURRENT + "\n")
    return path


def test_concurrent_starts_on_postgresql_make_exactly_one_rotation(token_file):
    outcomes = race_starts(portal_env(database_url(), token_file))
    assert outcomes.count("started") == 1, outcomes
    assert all(
        o.startswith("refused: a rotation is already running") for o in outcomes if o != "started"
    )
    assert sorted(NodeTokenRecord.objects.values_list("slot", flat=True)) == ["current", "next"]


async def test_another_processs_rotation_reaches_this_processs_store_within_the_interval(
    token_file,
):
    url = await database_sync_to_async(database_url)()
    config = PortalConfig(seeds=("127.0.0.1:1",), node_token_file=str(token_file))
    with override_settings(ELASTICKV_ADMIN=config):
        store = DatabaseTokenStore(str(token_file))
        await store.sync()  # seeds the table from the file
        assert [t.value for t in store.candidates("n:1")] == [CURRENT]
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", START_ELSEWHERE],
            cwd=ROOT,
            env=portal_env(url, token_file),
            check=True,
            timeout=120,
        )
        committed = time.monotonic()
        while [t.value for t in store.candidates("n:1")] != [CURRENT, NEXT]:
            assert time.monotonic() - committed < SYNC_INTERVAL_S + 0.5, "not picked up in time"
            await asyncio.sleep(0.05)
            await store.sync()
    status = await database_sync_to_async(node_token.token_status)()
    assert status.next is not None
    assert status.next.created_by == "portal-b"
