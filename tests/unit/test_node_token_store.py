"""Every portal process's token store follows the database within SYNC_INTERVAL_S, survives a
database it cannot read, and says why (never with a token)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from django.db import DatabaseError
from django.test import override_settings

from cluster import node_token
from cluster.models import NodeTokenRecord
from cluster.node_token import DatabaseTokenStore
from cluster.tokens import fingerprint
from elastickv_admin.config import PortalConfig

CURRENT = "the-current-node-token-0123456789"
NEXT = "the-next-node-token-0123456789abc"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token_file(tmp_path) -> Iterator[str]:
    path = tmp_path / "node-token"
    path.write_text(CURRENT + "\n")
    config = PortalConfig(seeds=("127.0.0.1:1",), node_token_file=str(path))
    with override_settings(ELASTICKV_ADMIN=config):
        node_token._file_checked.clear()
        yield str(path)


def values(store: DatabaseTokenStore) -> list[str]:
    return [t.value for t in store.candidates("node:1")]


async def test_a_change_made_by_another_process_is_used_within_the_sync_interval(token_file):
    from asgiref.sync import sync_to_async

    store = DatabaseTokenStore(token_file, interval_s=0.4)
    await store.sync()
    assert values(store) == [CURRENT]  # seeded from the file on the first sync
    # Another process starts a rotation: nothing tells this one but the database.
    other = DatabaseTokenStore(token_file)
    await sync_to_async(node_token.do_start_rotation)("elsewhere", NEXT)
    await other.sync()
    await store.sync()
    assert values(store) == [CURRENT], "within the interval the store keeps what it read"
    await asyncio.sleep(0.45)
    await store.sync()
    assert values(store) == [CURRENT, NEXT]
    assert values(other) == [CURRENT, NEXT]


async def test_a_change_made_in_this_process_is_used_at_the_next_call(token_file):
    from asgiref.sync import sync_to_async

    from cluster.client import node_client, reset_node_client

    reset_node_client()
    store = node_client().tokens
    assert isinstance(store, DatabaseTokenStore)
    await store.sync()
    await sync_to_async(node_token.do_start_rotation)("here", NEXT)
    await store.sync()  # the commit marked it stale: no waiting for the interval
    assert values(store) == [CURRENT, NEXT]
    reset_node_client()


async def test_an_unreadable_database_keeps_the_tokens_held_and_warns_once(
    token_file, caplog, monkeypatch
):
    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()

    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseError("connection refused")

    monkeypatch.setattr(NodeTokenRecord.objects, "values_list", broken)
    with caplog.at_level(logging.WARNING, logger="cluster.node_token"):
        await store.sync()
        await store.sync()
    assert values(store) == [CURRENT]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "cluster.node_token" and r.levelno == logging.WARNING
    ]
    assert warnings == [
        "node token: cannot read the database (DatabaseError: connection refused); "
        "using the tokens held (last read)"
    ]


async def test_a_first_read_that_fails_falls_back_to_the_token_file(token_file, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseError("no such table")

    monkeypatch.setattr(node_token, "ensure_node_token", broken)
    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()
    assert values(store) == [CURRENT]


async def test_a_token_the_configured_keys_cannot_decrypt_is_reported_by_key_name(
    token_file, caplog
):
    from asgiref.sync import sync_to_async

    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()
    await sync_to_async(node_token.do_start_rotation)("admin", NEXT)
    with (
        override_settings(SECRETS_KEY="a-different-key-0123456789abcdef", SECRETS_OLD_KEYS=[]),
        caplog.at_level(logging.WARNING, logger="cluster.node_token"),
    ):
        await store.sync()
    assert values(store) == [CURRENT], "nothing new could be read; the held token stays"
    assert "is ELASTICKV_ADMIN_SECRETS_KEY (or ELASTICKV_ADMIN_SECRETS_OLD_KEYS)" in caplog.text
    assert NEXT not in caplog.text


def test_a_first_start_seeds_the_table_once_from_the_token_file(token_file, caplog):
    with caplog.at_level(logging.INFO, logger="cluster.node_token"):
        node_token.ensure_node_token()
        node_token.ensure_node_token()
    [row] = NodeTokenRecord.objects.all()
    assert (row.slot, row.fingerprint, row.source) == ("current", fingerprint(CURRENT), "file")
    assert CURRENT not in row.ciphertext
    assert f"seeded the database from --nodeTokenFile ({fingerprint(CURRENT)})" in caplog.text
    assert "database holds" not in caplog.text, "the file matches: no warning"
