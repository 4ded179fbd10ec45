"""Attacks on the client address through the real `elastickv-admin serve` (daphne): a forged
X-Forwarded-For must not choose the audit log's source_ip nor dodge the login lockout."""

from __future__ import annotations

import socket
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NO_NODES, portal_login

LIMIT = 5  # ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT's default

pytestmark = pytest.mark.integration


def _source_ips(portal: Any, action: str) -> list[str]:
    db = Path(portal.env["ELASTICKV_ADMIN_DATA_DIR"]) / "portal.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT source_ip FROM audit_auditevent WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [row[0] for row in rows]


def _websocket_handshake(portal: Any, forwarded_for: str) -> bytes:
    """A raw WebSocket upgrade to /api/stream with a bogus API token: the handshake is
    refused and audited (api_token.rejected) with the client address."""
    host, port = urllib.parse.urlsplit(portal.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                "GET /api/stream HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://{host}:{port}\r\n"
                "Authorization: Bearer not-a-real-token\r\n"
                f"X-Forwarded-For: {forwarded_for}\r\n\r\n"
            ).encode()
        )
        return sock.recv(1024).split(b"\r\n", 1)[0]


def test_without_proxies_a_forged_forwarded_for_through_serve_is_ignored(portal_factory):
    portal = portal_factory(NO_NODES)
    for i in range(LIMIT - 1):
        assert portal_login(portal, "wrong", f"203.0.113.{i}") == 400
    assert portal_login(portal, "wrong", "203.0.113.99") == 429  # the LIMIT-th failure locks
    assert portal_login(portal, portal.admin_password, "198.51.100.1") == 429
    assert set(_source_ips(portal, "login.failed")) == {"127.0.0.1"}
    _websocket_handshake(portal, "203.0.113.99")
    assert _source_ips(portal, "api_token.rejected") == ["127.0.0.1"]


def test_proxy_headers_flag_does_not_let_the_leftmost_forwarded_for_dodge_the_lockout(
    portal_factory,
):
    # Behind one proxy: the caller forges the first entry, the proxy (here: the test) appends
    # the address it saw. daphne's --proxy-headers believed the leftmost one.
    portal = portal_factory([*NO_NODES, "--proxyHeaders"])
    for i in range(LIMIT - 1):
        assert portal_login(portal, "wrong", f"203.0.113.{i}, 192.0.2.7") == 400
    assert portal_login(portal, "wrong", "203.0.113.99, 192.0.2.7") == 429
    assert portal_login(portal, portal.admin_password, "198.51.100.1, 192.0.2.7") == 429
    assert set(_source_ips(portal, "login.failed")) == {"192.0.2.7"}


def test_proxy_headers_flag_does_not_let_a_forged_forwarded_for_pick_the_websocket_source_ip(
    portal_factory,
):
    portal = portal_factory([*NO_NODES, "--proxyHeaders"])
    status = _websocket_handshake(portal, "6.6.6.6, 192.0.2.7")
    assert b" 101 " not in status + b" "
    assert _source_ips(portal, "api_token.rejected") == ["192.0.2.7"]


def test_two_trusted_hops_through_serve_take_the_second_entry_from_the_right(portal_factory):
    portal = portal_factory(NO_NODES, {"ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS": "2"})
    assert portal_login(portal, "wrong", "6.6.6.6, 192.0.2.9, 10.0.0.1") == 400
    # Fewer entries than trusted proxies: the request skipped one; the TCP peer is recorded.
    assert portal_login(portal, "wrong", "6.6.6.6") == 400
    assert _source_ips(portal, "login.failed") == ["192.0.2.9", "127.0.0.1"]


def test_proxy_headers_with_zero_hops_refuses_to_start(portal_factory):
    with pytest.raises(
        RuntimeError, match="--proxyHeaders needs ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS >= 1"
    ):
        portal_factory([*NO_NODES, "--proxyHeaders"], {"ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS": "0"})
