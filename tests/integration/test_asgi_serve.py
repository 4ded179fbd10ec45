"""`elastickv-admin serve` under daphne: static files with hashed names, the WebSocket route."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sqlite3
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from elastickv_admin.asgi import application
from tests.conftest import PortalProcess


@pytest.mark.integration
def test_serve_collects_and_serves_hashed_static_files_under_asgi(portal_factory):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    # Any page will do: the 404 page answers anyone, with the full layout.
    with pytest.raises(urllib.error.HTTPError) as page:
        urllib.request.urlopen(portal.url + "/no-such-page/")
    html = page.value.read().decode()
    css = re.search(r'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', html)
    assert css, "the page links the manifest-hashed stylesheet"
    with urllib.request.urlopen(portal.url + css.group(1)) as resp:
        assert resp.headers["Content-Type"].startswith("text/css")
        assert "max-age" in resp.headers["Cache-Control"]
        assert b".sidebar" in resp.read()
    js = re.search(r'src="(/static/django_htmx/htmx-2\.min\.[0-9a-f]{12}\.js)"', html)
    assert js
    with urllib.request.urlopen(portal.url + js.group(1)) as resp:
        assert b"htmx" in resp.read(200_000)


@pytest.mark.integration
def test_serve_refuses_to_start_without_a_node_token(portal_factory):
    with pytest.raises(RuntimeError, match="no node token configured"):
        portal_factory(["--nodes", "127.0.0.1:1"])


@pytest.mark.integration
def test_unknown_api_path_answers_the_json_error_envelope(portal_factory):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(portal.url + "/api/nope")
    assert err.value.code == 404
    assert err.value.read() == b'{"code": 404, "message": "no API endpoint at /api/nope"}'


@pytest.mark.django_db(transaction=True)
async def test_stream_websocket_answers_hello(viewer_token):
    communicator = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[
            (b"host", b"127.0.0.1"),
            (b"origin", b"http://127.0.0.1"),
            (b"authorization", f"Bearer {viewer_token}".encode()),
        ],
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from() == {"type": "hello", "protocol": 1}
    await communicator.disconnect()


async def test_stream_websocket_refuses_a_foreign_origin():
    communicator = WebsocketCommunicator(
        application, "/api/stream", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


# --- the live stream under daphne, over real TCP -------------------------------------------------


class RawSocket:
    """A bare RFC 6455 client on asyncio streams: it sends exactly the bytes a test asks for
    (invalid UTF-8 included), which a well-behaved client library would refuse to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def handshake(
        cls, portal: PortalProcess, token: str, origin: str
    ) -> tuple[bytes, RawSocket]:
        host, port = portal.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /api/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return head, cls(reader, writer)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            size = bytes([0x80 | n])
        elif n < 65536:
            size = bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            size = bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode]) + size + mask + masked)

    async def receive(self) -> dict[str, Any]:
        """The next text message, or {"close": code} for a close frame."""
        while True:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), 10)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                return {"close": struct.unpack("!H", payload[:2])[0] if payload else 1005}
            if opcode == 0x1:
                message: dict[str, Any] = json.loads(payload)
                return message

    async def reply_to(self, payload: bytes, opcode: int = 0x1) -> dict[str, Any]:
        self.send(payload, opcode)
        return await self.receive()


def _refuse_audit_writes(portal: PortalProcess) -> None:
    database = Path(portal.env["ELASTICKV_ADMIN_DATA_DIR"]) / "portal.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TRIGGER audit_disk_full BEFORE INSERT ON audit_auditevent "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


@pytest.mark.integration
async def test_under_daphne_hostile_frames_get_errors_and_an_audit_failure_closes_4503(
    portal_factory,
):
    portal = portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])
    token = portal.manage("create_api_token", portal.admin_username).strip()
    host = portal.url.removeprefix("http://").split(":")[0]

    # Same host, another port: another origin, refused before the upgrade.
    head, _ = await RawSocket.handshake(portal, token, f"http://{host}:9")
    assert head.startswith(b"HTTP/1.1 403"), head

    head, ws = await RawSocket.handshake(portal, token, portal.url)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (await ws.receive())["type"] == "hello"
    ping = b'{"type": "ping"}'
    for frame, opcode, expected in [
        (b'{"type": "subscribe", "series": "\\udc80"}', 0x1, "series: unknown series"),
        (b"[" * 1500 + b"]" * 1500, 0x1, "message: JSON nested too deeply"),
        (b'{"type": "ping", "pad": "' + b"x" * 8_000 + b'"}', 0x1, "message: longer than"),
        (ping, 0x2, "message: send JSON text frames"),
    ]:
        error = await ws.reply_to(frame, opcode)
        assert error["type"] == "error", error
        assert error["message"].startswith(expected), error
        assert (await ws.reply_to(ping)) == {"type": "pong"}

    # The audit log cannot be written: the subscribe is refused with a code daphne can send.
    _refuse_audit_writes(portal)
    closed = await ws.reply_to(b'{"type": "subscribe", "series": "writes"}')
    assert closed == {"close": 4503}

    # Text that is not UTF-8 never reaches the portal: daphne (autobahn) drops the connection.
    head, ws = await RawSocket.handshake(portal, token, portal.url)
    assert (await ws.receive())["type"] == "hello"
    ws.send(b'{"type": "ping", "x": "\xff"}')
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await ws.receive()
