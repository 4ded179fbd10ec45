"""WebSocket handshakes: session cookie or Bearer header, the policy, the Origin check; a
socket whose session ends or whose role goes is closed within the re-check interval; a
subscribe is audited before the consumer sees it."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from accounts import ws
from accounts.actions import do_end_sessions, do_revoke_api_token, do_set_roles
from accounts.models import ApiToken
from audit.models import AuditEvent
from elastickv_admin.asgi import application
from tests.helpers import stream_group_members

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
]
HOST = (b"host", b"127.0.0.1")
ORIGIN = (b"origin", b"http://127.0.0.1")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={key}".encode()


async def connect(*headers: tuple[bytes, bytes], path: str = "/api/stream"):
    communicator = WebsocketCommunicator(application, path, headers=[HOST, ORIGIN, *headers])
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def viewer_socket(make_user: Any) -> tuple[Any, WebsocketCommunicator]:
    user = await sync_to_async(make_user)("vera", "viewer")
    cookie = await sync_to_async(session_cookie)(user)
    communicator, connected, _ = await connect((b"cookie", cookie))
    assert connected
    assert await communicator.receive_json_from() == {"type": "hello", "protocol": 1}
    return user, communicator


async def test_an_anonymous_handshake_is_refused():
    _, connected, code = await connect()
    assert not connected
    assert code == 4401


async def test_a_viewer_session_cookie_opens_the_stream(make_user):
    _, communicator = await viewer_socket(make_user)
    await communicator.disconnect()


async def test_a_bearer_token_header_opens_the_stream(viewer_token):
    communicator, connected, _ = await connect(
        (b"authorization", f"Bearer {viewer_token}".encode())
    )
    assert connected
    await communicator.disconnect()


async def test_a_token_in_the_query_string_is_not_accepted(viewer_token):
    _, connected, _ = await connect(path=f"/api/stream?token={viewer_token}")
    assert not connected


async def test_a_user_without_the_viewer_role_is_refused_and_it_is_audited(make_user):
    user = await sync_to_async(make_user)("ann", "auditor")
    cookie = await sync_to_async(session_cookie)(user)
    _, connected, code = await connect((b"cookie", cookie))
    assert not connected
    assert code == 4403
    event = await AuditEvent.objects.aget(action="permission.denied")
    assert (event.actor, event.target) == ("ann", "/api/stream")


async def test_a_foreign_origin_is_refused_even_with_a_valid_session(make_user):
    user = await sync_to_async(make_user)("vera", "viewer")
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)],
    )
    connected, _ = await communicator.connect()
    assert not connected


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_force_logout_closes_the_socket_within_the_recheck_interval(make_user):
    user, communicator = await viewer_socket(make_user)
    await sync_to_async(do_end_sessions)("system", user)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_a_socket_closed_by_the_recheck_releases_its_subscription(make_user):
    before = viewers_gauge()
    user, communicator = await viewer_socket(make_user)
    await communicator.send_json_to({"type": "subscribe", "series": "writes"})
    assert (await communicator.receive_json_from())["type"] == "subscribed"
    assert stream_group_members("writes") == 1
    await sync_to_async(do_end_sessions)("system", user)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await communicator.wait(timeout=5)
    assert viewers_gauge() == before
    assert stream_group_members("writes") == 0


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_removing_the_role_closes_the_socket(make_user):
    user, communicator = await viewer_socket(make_user)
    await sync_to_async(do_set_roles)("system", user, ["auditor"])
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_revoking_the_token_closes_its_socket(viewer_token):
    communicator, connected, _ = await connect(
        (b"authorization", f"Bearer {viewer_token}".encode())
    )
    assert connected
    await communicator.receive_json_from()
    token = await ApiToken.objects.select_related("user").aget()
    await sync_to_async(do_revoke_api_token)("system", token)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_a_live_session_keeps_its_socket(make_user):
    _, communicator = await viewer_socket(make_user)
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_a_subscribe_is_audited_before_the_consumer_sees_it(make_user):
    _, communicator = await viewer_socket(make_user)
    await communicator.send_json_to({"type": "subscribe", "series": "writes"})
    reply = await communicator.receive_json_from()
    assert reply["type"] == "subscribed"  # the consumer received the message after the audit
    event = await AuditEvent.objects.aget(action="websocket.subscribe")
    assert (event.actor, event.target, event.details) == (
        "vera",
        "/api/stream:writes",
        {"series": "writes"},
    )
    await communicator.disconnect()


def viewers_gauge() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("elastickv_admin_websocket_viewers") or 0.0


def refuse_audit_writes() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER audit_disk_full BEFORE INSERT ON audit_auditevent "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


async def test_a_subscribe_that_cannot_be_audited_closes_with_4503_and_cleans_up(make_user):
    before = viewers_gauge()
    _, communicator = await viewer_socket(make_user)
    await communicator.send_json_to({"type": "subscribe", "series": "writes"})
    assert (await communicator.receive_json_from())["type"] == "subscribed"
    assert stream_group_members("writes") == 1
    assert viewers_gauge() == before + 1

    await sync_to_async(refuse_audit_writes)()
    try:
        await communicator.send_json_to({"type": "subscribe", "series": "reads"})
        closed = await communicator.receive_output(timeout=5)
        # 1011 is refused by daphne (autobahn sends only 1000 and 3000-4999 for an app).
        assert closed == {"type": "websocket.close", "code": 4503}
        await communicator.wait(timeout=5)  # the consumer ended
    finally:
        await sync_to_async(lambda: connection.cursor().execute("DROP TRIGGER audit_disk_full"))()
    # The consumer cleaned up: no viewer counted, nobody subscribed to either series.
    assert viewers_gauge() == before
    assert stream_group_members("writes") == 0
    assert stream_group_members("reads") == 0
    assert not await AuditEvent.objects.filter(target="/api/stream:reads").aexists()


# --- the Origin: scheme, host and port, exactly -------------------------------------------------


async def handshake(origin: bytes, host: bytes = b"127.0.0.1", *extra: tuple[bytes, bytes]):
    communicator = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[(b"host", host), (b"origin", origin), *extra],
    )
    connected, code = await communicator.connect(timeout=5)
    if connected:
        await communicator.disconnect()
    return connected, code


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"http://127.0.0.1:9999", id="wrong-port"),
        pytest.param(b"https://127.0.0.1", id="wrong-scheme"),
        pytest.param(b"http://evil.example", id="foreign-host"),
        pytest.param(b"http://127.0.0.1.evil.example", id="host-as-prefix"),
        pytest.param(b"null", id="opaque-origin"),
    ],
)
async def test_a_cross_origin_handshake_with_the_victims_cookie_is_refused(make_user, origin):
    user = await sync_to_async(make_user)("vera", "viewer")
    cookie = await sync_to_async(session_cookie)(user)
    connected, code = await handshake(origin, b"127.0.0.1", (b"cookie", cookie))
    assert not connected  # closed before accept: daphne answers the handshake 403
    assert code == 4403


async def test_a_handshake_without_an_origin_is_refused_even_with_a_token(viewer_token):
    communicator = WebsocketCommunicator(
        application,
        "/api/stream",
        headers=[HOST, (b"authorization", f"Bearer {viewer_token}".encode())],
    )
    connected, code = await communicator.connect(timeout=5)
    assert (connected, code) == (False, 4403)


async def test_the_portals_exact_origin_with_its_port_is_accepted(viewer_token):
    bearer = (b"authorization", f"Bearer {viewer_token}".encode())
    assert (await handshake(b"http://127.0.0.1:8000", b"127.0.0.1:8000", bearer))[0]
    # The same host on another port is another origin.
    assert not (await handshake(b"http://127.0.0.1", b"127.0.0.1:8000", bearer))[0]


@override_settings(CSRF_TRUSTED_ORIGINS=["https://portal.example.com"])
async def test_an_origin_in_csrf_trusted_origins_is_accepted(viewer_token):
    bearer = (b"authorization", f"Bearer {viewer_token}".encode())
    assert (await handshake(b"https://portal.example.com", b"127.0.0.1", bearer))[0]
    assert not (await handshake(b"http://portal.example.com", b"127.0.0.1", bearer))[0]


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
async def test_behind_a_tls_proxy_the_https_origin_is_the_portals_own(viewer_token, settings):
    settings.TRUSTED_PROXY_HOPS = 1
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    bearer = (b"authorization", f"Bearer {viewer_token}".encode())
    proto = (b"x-forwarded-proto", b"https")
    assert (await handshake(b"https://127.0.0.1", b"127.0.0.1", bearer, proto))[0]
    assert not (await handshake(b"http://127.0.0.1", b"127.0.0.1", bearer, proto))[0]


async def test_without_trusted_proxies_a_forged_forwarded_proto_does_not_make_a_handshake_https(
    viewer_token, settings
):
    settings.TRUSTED_PROXY_HOPS = 0
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    bearer = (b"authorization", f"Bearer {viewer_token}".encode())
    proto = (b"x-forwarded-proto", b"https")
    assert not (await handshake(b"https://127.0.0.1", b"127.0.0.1", bearer, proto))[0]
    assert (await handshake(b"http://127.0.0.1", b"127.0.0.1", bearer, proto))[0]


# --- subscribes: rate limited, audited once per series ------------------------------------------


async def test_a_thousand_resubscribes_write_one_audit_row_and_the_rest_are_told_to_wait(
    make_user, monkeypatch
):
    now = [1000.0]
    monkeypatch.setattr(ws, "monotonic", lambda: now[0], raising=False)  # frozen: no refill
    _, communicator = await viewer_socket(make_user)
    replies: list[dict[str, Any]] = []
    for _ in range(1000):
        await communicator.send_json_to({"type": "subscribe", "series": "writes"})
        replies.append(await communicator.receive_json_from())
    subscribed = [r for r in replies if r["type"] == "subscribed"]
    errors = [r for r in replies if r["type"] == "error"]
    assert len(subscribed) == ws.SUBSCRIBE_BURST
    assert len(errors) == 1000 - ws.SUBSCRIBE_BURST
    assert {e["code"] for e in errors} == {429}
    assert errors[0]["message"].startswith("subscribe: too many subscribes on this socket")
    assert "Wait a second, then subscribe once" in errors[0]["message"]
    # The same subscribe, again and again: one audit row.
    assert await AuditEvent.objects.filter(action="websocket.subscribe").acount() == 1
    # A second later the socket may subscribe again.
    now[0] += 1.0
    await communicator.send_json_to({"type": "subscribe", "series": "reads"})
    assert (await communicator.receive_json_from())["type"] == "subscribed"
    assert await AuditEvent.objects.filter(action="websocket.subscribe").acount() == 2
    await communicator.disconnect()


async def test_cycling_through_every_series_audits_at_most_the_burst(make_user, monkeypatch):
    monkeypatch.setattr(ws, "monotonic", lambda: 1000.0, raising=False)
    _, communicator = await viewer_socket(make_user)
    series = ["writes", "reads", "read_bytes", "write_bytes"]
    for i in range(1000):
        await communicator.send_json_to({"type": "subscribe", "series": series[i % 4]})
        await communicator.receive_json_from()
    rows = [e.target async for e in AuditEvent.objects.filter(action="websocket.subscribe")]
    # Five subscribes got through; the fifth repeats the first series and is folded.
    assert sorted(rows) == sorted(f"/api/stream:{s}" for s in series)
    await communicator.disconnect()


async def test_a_consumer_can_check_has_perm_in_async_code_without_a_query(make_user):
    from channels.auth import AuthMiddlewareStack

    from accounts.ws import WebSocketAccessMiddleware

    async def consumer(scope, receive, send):
        await receive()  # websocket.connect
        user = scope["user"]
        # Sync has_perm inside the event loop: would raise SynchronousOnlyOperation on a query.
        answer = [user.has_perm("accounts.view_dashboards"), user.has_perm("accounts.view_audit")]
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(answer)})

    app = AuthMiddlewareStack(WebSocketAccessMiddleware(consumer))
    user = await sync_to_async(make_user)("vera", "viewer")
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        app, "/api/stream", headers=[HOST, ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "[True, False]"
    await communicator.disconnect()
