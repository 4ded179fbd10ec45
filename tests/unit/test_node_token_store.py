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
from elastickv_admin.lib.config import PortalConfig

CURRENT = "the-current-node-token-0123456789"
NEXT = "the-next-node-token-0123456789abc"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token_file(tmp_path) -> Iterator[str]:
    path = tmp_path / "node-token"
    path.write_text(CURRENT + "\n")
    config = PortalConfig(seeds=("127.0.0.1:1",), node_token_file=str(path))
    with override_settings(ELASTICKV_ADMIN=config):
        yield str(path)


KNOWN = ["node:1"]  # the node the rotations in these tests know when they start


def values(store: DatabaseTokenStore, address: str = "node:1") -> list[str]:
    return [t.value for t in store.candidates(address)]


async def test_a_change_made_by_another_process_is_used_within_the_sync_interval(token_file):
    from asgiref.sync import sync_to_async

    store = DatabaseTokenStore(token_file, interval_s=0.4)
    await store.sync()
    assert values(store) == [CURRENT]  # seeded from the file on the first sync
    # Another process starts a rotation: nothing tells this one but the database.
    other = DatabaseTokenStore(token_file)
    await sync_to_async(node_token.do_start_rotation)("elsewhere", NEXT, known_addresses=KNOWN)
    await other.sync()
    await store.sync()
    assert values(store) == [CURRENT], "within the interval the store keeps what it read"
    await asyncio.sleep(0.45)
    await store.sync()
    assert values(store) == [CURRENT, NEXT]
    assert values(other) == [CURRENT, NEXT]


async def test_a_change_made_in_this_process_is_used_at_the_next_call(token_file):
    from asgiref.sync import sync_to_async

    from cluster.runtime import node_client, reset_runtime

    reset_runtime()
    store = node_client().tokens
    assert isinstance(store, DatabaseTokenStore)
    await store.sync()
    await sync_to_async(node_token.do_start_rotation)("here", NEXT, known_addresses=KNOWN)
    await store.sync()  # the commit marked it stale: no waiting for the interval
    assert values(store) == [CURRENT, NEXT]
    reset_runtime()


async def test_the_next_token_goes_only_to_nodes_known_when_the_rotation_started(token_file):
    from asgiref.sync import sync_to_async

    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()  # seeds the table from the file
    await sync_to_async(node_token.do_start_rotation)("admin", NEXT, known_addresses=KNOWN)
    await store.sync()
    assert values(store, "node:1") == [CURRENT, NEXT]  # known at the start
    assert values(store, "127.0.0.1:1") == [CURRENT, NEXT]  # a seed
    # An address a node reports later is offered the current token only.
    assert values(store, "10.6.6.6:50051") == [CURRENT]
    row = await NodeTokenRecord.objects.aget(slot="next")
    assert row.known_addresses == ["127.0.0.1:1", "node:1"]


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

    monkeypatch.setattr(node_token.store, "ensure_node_token", broken)
    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()
    assert values(store) == [CURRENT]


async def test_a_token_the_configured_keys_cannot_decrypt_is_reported_by_key_name(
    token_file, caplog
):
    from asgiref.sync import sync_to_async

    store = DatabaseTokenStore(token_file, interval_s=0)
    await store.sync()
    await sync_to_async(node_token.do_start_rotation)("admin", NEXT, known_addresses=KNOWN)
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


def test_a_rotation_running_at_the_upgrade_keeps_sending_next_to_the_nodes_it_probed():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    before, after = (
        [("cluster", "0002_node_token_head")],
        [("cluster", "0003_node_token_known_addresses")],
    )
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        head, _ = old.get_model("cluster", "NodeTokenHead").objects.get_or_create(pk=1, version=3)
        old.get_model("cluster", "NodeTokenRecord").objects.create(
            slot="next", ciphertext="x", fingerprint="sha256:0", source="pasted", created_by="a"
        )
        checks = old.get_model("cluster", "NodeTokenCheck").objects
        for address, version in (
            ("10.0.0.2:50051", head.version),
            ("10.0.0.9:1", head.version - 1),
        ):
            checks.create(
                address=address, state="current", checked_at=timezone.now(), version=version
            )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        row = new.get_model("cluster", "NodeTokenRecord").objects.get(slot="next")
        # The nodes its last probe found (this version's), not a stale row of another.
        assert row.known_addresses == ["10.0.0.2:50051"]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
