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

from accounts.actions import do_end_sessions, do_revoke_api_token, do_set_roles
from accounts.models import ApiToken
from audit.models import AuditEvent
from elastickv_admin.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
]
ORIGIN = (b"origin", b"http://127.0.0.1")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={key}".encode()


async def connect(*headers: tuple[bytes, bytes], path: str = "/api/stream"):
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
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
    await sync_to_async(do_end_sessions)(user)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


@override_settings(WS_RECHECK_INTERVAL_S=0.1)
async def test_removing_the_role_closes_the_socket(make_user):
    user, communicator = await viewer_socket(make_user)
    await sync_to_async(do_set_roles)(user, ["auditor"])
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
    await sync_to_async(do_revoke_api_token)(token)
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


async def test_a_subscribe_that_cannot_be_audited_closes_the_socket(make_user):
    _, communicator = await viewer_socket(make_user)

    def refuse_audit_writes() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TRIGGER audit_disk_full BEFORE INSERT ON audit_auditevent "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )

    await sync_to_async(refuse_audit_writes)()
    try:
        await communicator.send_json_to({"type": "subscribe", "series": "writes"})
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 1011}
    finally:
        await sync_to_async(lambda: connection.cursor().execute("DROP TRIGGER audit_disk_full"))()


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
    communicator = WebsocketCommunicator(app, "/api/stream", headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "[True, False]"
    await communicator.disconnect()
