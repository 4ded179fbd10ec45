"""`elastickv-admin serve` under daphne: static files with hashed names, the WebSocket route."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from channels.testing import WebsocketCommunicator

from elastickv_admin.asgi import application


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
