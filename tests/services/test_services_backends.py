"""The multi-process deployment's backends, for real: PostgreSQL and Redis."""

from __future__ import annotations

import os

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from tests.helpers import require

pytestmark = pytest.mark.services


@pytest.fixture(autouse=True)
def _services_available() -> None:
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "DATABASE_URL does not point at PostgreSQL (scripts/test.sh starts one)",
    )
    require(bool(settings.REDIS_URL), "REDIS_URL is not set (scripts/test.sh starts Redis)")


@pytest.mark.django_db
def test_migrations_run_on_postgresql_and_rows_round_trip():
    assert connection.vendor == "postgresql"
    User.objects.create_user("pg-user", password="x-long-password-1")
    assert User.objects.filter(username="pg-user").exists()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        assert int(cursor.fetchone()[0].split(".")[0]) >= 13


async def test_redis_channel_layer_delivers_a_group_message_between_two_layer_instances():
    # Two layer instances stand in for two portal processes sharing Redis.
    publisher = get_channel_layer()
    assert isinstance(publisher, RedisChannelLayer)
    subscriber = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]])
    channel = await subscriber.new_channel()
    await subscriber.group_add("keyviz.test", channel)
    try:
        await publisher.group_send("keyviz.test", {"type": "column", "column_unix_ms": 123})
        assert await subscriber.receive(channel) == {"type": "column", "column_unix_ms": 123}
    finally:
        await subscriber.group_discard("keyviz.test", channel)
        await subscriber.flush()
