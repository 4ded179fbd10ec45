"""Small helpers shared by test modules."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

# `serve` arguments for a portal that reaches no node (the pages that need none still work).
NO_NODES = ["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"]


def require(condition: bool, reason: str) -> None:
    """Skip when a tier's prerequisite is missing (CI turns the skip into a failure)."""
    if not condition:
        pytest.skip(reason)


# Fernet tokens start with version byte 0x80, i.e. "gAAAAA" in URL-safe base64.
FERNET_TEXT = r"gAAAAA[A-Za-z0-9_\-=]+"


def database_dump() -> str:
    """Every row of every table, raw, as one string (for "no secret in clear" checks)."""
    from django.db import connection

    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the schema)
            parts.append(f"{table}: {cursor.fetchall()!r}")
    return "\n".join(parts)


def decrypted_values(dump: str) -> set[str]:
    """Every Fernet ciphertext in ``dump`` that the configured keys can read, decrypted."""
    import contextlib

    from elastickv_admin.lib import crypto

    found = set()
    for ciphertext in re.findall(FERNET_TEXT, dump):
        with contextlib.suppress(crypto.InvalidToken):
            found.add(crypto.decrypt(ciphertext).decode("utf-8", "replace"))
    return found


def portal_login(portal: Any, password: str, forwarded_for: str) -> int:
    """One sign-in as the portal's admin through the real form of a `serve` process (CSRF
    cookie and token) with this X-Forwarded-For; the response status (no redirects)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(portal.url + "/login/") as resp:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', resp.read().decode())
    assert token
    body = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token.group(1),
            "username": portal.admin_username,
            "password": password,
        }
    ).encode()
    request = urllib.request.Request(
        portal.url + "/login/",
        data=body,
        headers={"X-Forwarded-For": forwarded_for, "Referer": portal.url + "/login/"},
    )
    no_redirect = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), _NoRedirect()
    )
    try:
        with no_redirect.open(request) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def stream_group_members(series: str) -> int:
    """Sockets of this process subscribed to a series: members of the in-memory channel
    layer's group `keyviz.<series>` (what the consumer joins and must leave on every exit)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    groups: dict[str, dict[str, float]] = getattr(layer, "groups", {})
    return len(groups.get(f"keyviz.{series}", {}))


# What a browser on http://127.0.0.1/ sends with a WebSocket handshake: its Host and its page's
# origin (the Origin must be the portal's exact scheme://host:port).
BROWSER_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]


async def until(check: Any, within: float = 20.0) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy; fail after `within`."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def store_route_writes(
    cluster: Any, key: bytes, counts: dict[str, int], *, slot: int, step_ms: int, lag_ms: int
) -> str:
    """One column of writes on `key`'s route, as the collector stores it: each node's raw
    cells (flushed `lag_ms` before the slot) stamped with the route's group and term, and the
    merged sum. Returns the bucket id."""
    import numpy as np

    from keyviz import store
    from keyviz.columns import MergedColumn, NodeColumn
    from keyviz.matrix import RowMeta
    from proto import admin_pb2

    route = cluster.route_for_key(key)
    group = cluster.group(route.group_id)
    meta = RowMeta(f"route:{route.route_id}", start=route.start, end=route.end)
    writes = admin_pb2.KEYVIZ_SERIES_WRITES
    column = [
        (
            slot,
            NodeColumn(
                node=node,
                column_unix_ms=slot - lag_ms,
                rows=(meta,),
                values=np.array([count], dtype=np.uint64),
                soft=np.zeros(1, dtype=np.bool_),
                raft_group_ids=np.array([group.group_id], dtype=np.uint64),
                leader_terms=np.array([group.term], dtype=np.uint64),
            ),
        )
        for node, count in counts.items()
    ]
    store.save_node_columns(writes, column)
    store.save_merged(
        [
            MergedColumn(
                series=writes,
                column_unix_ms=slot,
                step_ms=step_ms,
                rows=(meta,),
                values=np.array([sum(counts.values())], dtype=np.uint64),
                flags=np.zeros(1, dtype=np.uint8),
                contributors=dict.fromkeys(counts, slot - lag_ms),
            )
        ]
    )
    return meta.bucket_id
