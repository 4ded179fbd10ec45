"""WebSocket access: the same policy as the HTTP pages, for every WebSocket route.

Place it inside Channels' AuthMiddleware (elastickv_admin/asgi.py), which has loaded the
session user; AllowedHostsOriginValidator outside checks the Origin. Then:

- the handshake is authenticated by the session cookie (browsers) or by an
  ``Authorization: Bearer <API token>`` header (other clients; never a token in the URL),
  and checked against ``WEBSOCKET_POLICY`` in accounts/policy.py; an unmapped path or a
  missing permission closes the handshake (HTTP 403);
- every ``WS_RECHECK_INTERVAL_S`` (30 s) the session or token is checked again; when the
  session ended (logout, force logout, expiry, deactivation, password reset) or the role was
  removed, the socket is closed with 4401 / 4403 and the consumer receives a normal
  ``websocket.disconnect``, so its cleanup (group_discard) runs;
- a client message ``{"type": "subscribe", ...}`` is written to the audit log
  (``websocket.subscribe``) before the consumer sees it; if that write fails the socket is
  closed (1011) and the subscription never happens.

Consumers opt in by doing nothing: ``scope["user"]`` is already authorized, with its
permissions loaded, so ``scope["user"].has_perm("accounts.view_dashboards")`` in an async
``connect`` answers without touching the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore

from accounts.actions import mfa_required
from accounts.middleware import allowed
from accounts.models import ApiToken
from accounts.policy import WEBSOCKET_POLICY, Access
from accounts.tokens import TokenRejected, authenticate_token, bearer
from audit.context import AuditContext, audit_context, new_request_id
from audit.models import Outcome
from audit.service import AuditWriteError, arecord_event, record_event
from elastickv_admin.net import client_ip_from_scope

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_AUDIT_FAILED = 1011


@dataclass(frozen=True)
class Principal:
    user: User | AnonymousUser
    access: Access | None
    session_key: str | None = None
    token_id: int | None = None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _context(scope: Scope, actor: str) -> AuditContext:
    return AuditContext(
        request_id=new_request_id(),
        source_ip=client_ip_from_scope(scope),
        user_agent=_header(scope, b"user-agent")[:300],
        actor=actor,
    )


def authorize_handshake(scope: Scope, context: AuditContext) -> tuple[Principal | None, int]:
    """(principal, 0) when the handshake may proceed; (None, close code) otherwise. Sync."""
    access = WEBSOCKET_POLICY.get(scope.get("path", ""))
    header = _header(scope, b"authorization")
    token_id = None
    session_key = None
    if header:
        raw = bearer(header)
        try:
            if raw is None:
                raise TokenRejected("Authorization must be 'Bearer <API token>'")
            token = authenticate_token(raw)
        except TokenRejected as exc:
            record_event(
                "api_token.rejected",
                target=scope.get("path", ""),
                outcome=Outcome.DENIED,
                details={"reason": str(exc), "websocket": True},
            )
            return None, CLOSE_UNAUTHENTICATED
        user: User | AnonymousUser = token.user
        token_id = token.pk
    else:
        user = scope.get("user") or AnonymousUser()
        user = getattr(user, "_wrapped", user) or AnonymousUser()
        session = scope.get("session")
        session_key = getattr(session, "session_key", None)
    if not user.is_authenticated:
        return None, CLOSE_UNAUTHENTICATED
    context.actor = user.get_username()
    if access is None:
        logger.error(
            "WebSocket path %r has no entry in WEBSOCKET_POLICY: denied", scope.get("path")
        )
    needs_mfa = (
        token_id is None
        and isinstance(user, User)
        and not (scope.get("session") or {}).get("mfa_verified")
        and mfa_required(user)
    )
    if access is None or needs_mfa or not allowed(access, user):
        record_event(
            "permission.denied",
            target=scope.get("path", ""),
            outcome=Outcome.DENIED,
            details={
                "websocket": True,
                "required": str(access) if access else "unmapped",
                "second_factor_missing": needs_mfa,
            },
        )
        return None, CLOSE_FORBIDDEN
    # Warm the permission cache: consumers may call user.has_perm() in async code without a
    # database query (the periodic re-check reloads the user from the database).
    user.get_all_permissions()
    return Principal(user, access, session_key, token_id), 0


def still_allowed(principal: Principal) -> int:
    """0 while the principal may keep the socket; else the close code. Sync (database)."""
    if principal.token_id is not None:
        token = ApiToken.objects.select_related("user").filter(pk=principal.token_id).first()
        if token is None or not token.active or not token.user.is_active:
            return CLOSE_UNAUTHENTICATED
        user: User | AnonymousUser = token.user
    else:
        if not principal.session_key:
            return CLOSE_UNAUTHENTICATED
        # A fresh read of the session: gone after logout/force logout/expiry, and the
        # password hash check fails after a reset.
        store = SessionStore(session_key=principal.session_key)
        user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
        if not user.is_authenticated or user.pk != principal.user.pk:
            return CLOSE_UNAUTHENTICATED
    return 0 if allowed(principal.access, user) else CLOSE_FORBIDDEN


def _subscription(text: str) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except (ValueError, TypeError):
        return None
    if isinstance(message, dict) and message.get("type") == "subscribe":
        return message
    return None


class WebSocketAccessMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        context = _context(scope, "anonymous")
        with audit_context(context):
            try:
                principal, code = await database_sync_to_async(authorize_handshake)(scope, context)
            except AuditWriteError:
                principal, code = None, CLOSE_AUDIT_FAILED
        if principal is None:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": code})
            return None
        scope = dict(scope, user=principal.user)
        return await self._serve(scope, receive, send, principal, context)

    async def _serve(
        self, scope: Scope, receive: Any, send: Any, principal: Principal, context: AuditContext
    ) -> Any:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        closed = False

        async def guarded_send(message: dict[str, Any]) -> None:
            if not closed:
                await send(message)

        async def close(code: int) -> None:
            nonlocal closed
            if not closed:
                closed = True
                await send({"type": "websocket.close", "code": code})
            await inbox.put({"type": "websocket.disconnect", "code": code})

        async def audited(message: dict[str, Any]) -> bool:
            subscription = _subscription(message.get("text") or "")
            if subscription is None:
                return True
            details = {k: v for k, v in subscription.items() if k != "type"}
            with audit_context(context):
                try:
                    await arecord_event(
                        "websocket.subscribe",
                        target=f"{scope.get('path', '')}:{details.get('series', '')}",
                        details=details,
                    )
                except AuditWriteError:
                    return False
            return True

        async def pump() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive" and not await audited(message):
                    await close(CLOSE_AUDIT_FAILED)
                    return
                await inbox.put(message)
                if message["type"] == "websocket.disconnect":
                    return

        async def watch() -> None:
            interval = float(getattr(settings, "WS_RECHECK_INTERVAL_S", 30.0))
            while True:
                await asyncio.sleep(interval)
                code = await database_sync_to_async(still_allowed)(principal)
                if code:
                    await close(code)
                    return

        tasks = [asyncio.create_task(pump()), asyncio.create_task(watch())]
        try:
            return await self.inner(scope, inbox.get, guarded_send)
        finally:
            for task in tasks:
                task.cancel()
