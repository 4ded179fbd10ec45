"""WebSocket access: the same policy as the HTTP pages, for every WebSocket route.

Place it inside Channels' AuthMiddleware (elastickv_admin/asgi.py), which has loaded the
session user. Then:

- the handshake's ``Origin`` must be exactly the portal's own ``scheme://host[:port]`` (as the
  request names it, the scheme behind a trusted proxy from ``X-Forwarded-Proto``) or one of
  ``CSRF_TRUSTED_ORIGINS``: Django's CSRF origin rule for HTTP, applied by Django's own code
  (``origin_allowed``); anything else is closed before accept (HTTP 403);
- the handshake is authenticated by the session cookie (browsers) or by an
  ``Authorization: Bearer <API token>`` header (other clients; never a token in the URL),
  and checked against ``WEBSOCKET_POLICY`` in accounts/policy.py; an unmapped path or a
  missing permission closes the handshake (HTTP 403);
- every ``WS_RECHECK_INTERVAL_S`` (30 s) the session or token is checked again; when the
  session ended (logout, force logout, expiry, deactivation, password reset) or the role was
  removed, the socket is closed with 4401 / 4403 and the consumer receives a normal
  ``websocket.disconnect``, so its cleanup (group_discard) runs;
- every client frame is read safely (``parse_frame``: at most ``MAX_FRAME_BYTES``, JSON text,
  any nesting): a frame the middleware cannot read is passed on for the consumer to refuse
  with an error message, never an exception in the receive path;
- a client message ``{"type": "subscribe", ...}`` is written to the audit log
  (``websocket.subscribe``) before the consumer sees it; the same subscribe again on the same
  socket within ``SUBSCRIBE_AUDIT_FOLD_S`` is not written again. Subscribes are limited per
  socket (a bucket of ``SUBSCRIBE_BURST``, refilled at ``SUBSCRIBE_PER_S``); one over the
  limit is answered ``{"type": "error", "code": 429, ...}`` and neither audited nor passed on.
  If the audit write fails the socket is closed with 4503 (the server library refuses 1011
  from an application) and the subscription never happens.

Consumers opt in by doing nothing: ``scope["user"]`` is already authorized, with its
permissions loaded, so ``scope["user"].has_perm("accounts.view_dashboards")`` in an async
``connect`` answers without touching the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from time import monotonic
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import is_same_domain

from accounts.models import ApiToken
from accounts.policy import Target, Verdict, decide
from accounts.tokens import TokenRejected, authenticate_token, bearer
from audit.context import AuditContext, audit_context, new_request_id
from audit.models import Outcome
from audit.service import AuditWriteError, arecord_event, record_event
from elastickv_admin.lib.errors import ParamError
from elastickv_admin.lib.net import client_ip_from_scope, trust_forwarded_proto

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_INTERNAL = 4500  # the receive path failed unexpectedly (a bug): the client may reconnect
# Not 1011: daphne (autobahn) lets an application send only 1000 and 3000-4999.
CLOSE_AUDIT_UNAVAILABLE = 4503
# The largest client frame read (README "Live stream protocol"); daphne itself drops the
# connection (1009) past its own 1 MiB cap.
MAX_FRAME_BYTES = 4096
# Subscribes per socket: a bucket of SUBSCRIBE_BURST, refilled at SUBSCRIBE_PER_S.
SUBSCRIBE_BURST = 5
SUBSCRIBE_PER_S = 2.0
# The same subscribe on the same socket is audited once per this window.
SUBSCRIBE_AUDIT_FOLD_S = 60.0


@dataclass(frozen=True)
class Principal:
    user: User | AnonymousUser
    target: Target
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
    target = Target.stream(scope.get("path", ""))
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
                target=target.name,
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
    # An anonymous handshake is told to authenticate, mapped path or not (not audited).
    if not user.is_authenticated:
        return None, CLOSE_UNAUTHENTICATED
    context.actor = user.get_username()
    decision = decide(
        user,
        target,
        second_factor_owed=token_id is None
        and not (scope.get("session") or {}).get("mfa_verified"),
    )
    if decision.verdict is Verdict.UNMAPPED:
        logger.error("WebSocket path %r has no entry in WEBSOCKET_POLICY: denied", target.name)
    if not decision.allowed:
        record_event(
            "permission.denied",
            target=target.name,
            outcome=Outcome.DENIED,
            details={
                "websocket": True,
                "required": decision.required,
                "second_factor_missing": decision.verdict is Verdict.SECOND_FACTOR,
            },
        )
        return None, CLOSE_FORBIDDEN
    # Warm the permission cache: consumers may call user.has_perm() in async code without a
    # database query (the periodic re-check reloads the user from the database).
    user.get_all_permissions()
    return Principal(user, target, session_key, token_id), 0


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
    return 0 if decide(user, principal.target).allowed else CLOSE_FORBIDDEN


# --- the Origin ---------------------------------------------------------------------------


class _Handshake(HttpRequest):
    """A WebSocket handshake as Django sees an HTTP request (its headers, the server's
    address), so Django's own host and scheme rules apply: ALLOWED_HOSTS in get_host(), and
    SECURE_PROXY_SSL_HEADER (X-Forwarded-Proto, set with ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS)
    in is_secure()."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        for name, value in scope.get("headers", []):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            # A repeated header is joined, as for HTTP: two Origins match nothing.
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text
        server = scope.get("server") or ("", None)
        self.META["SERVER_NAME"] = str(server[0] or "")
        self.META["SERVER_PORT"] = str(server[1] or "")
        trust_forwarded_proto(self.META)
        self._tls = scope.get("scheme") in ("wss", "https")

    def _get_scheme(self) -> str:
        return "https" if self._tls else "http"


def _no_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("not called")  # pragma: no cover


def origin_allowed(scope: Scope) -> bool:
    """Django's CSRF origin rule (CsrfViewMiddleware._origin_verified) for a handshake: the
    Origin is exactly this request's scheme://host[:port], or one of CSRF_TRUSTED_ORIGINS
    (``https://*.example.com`` covers subdomains). A missing Origin is refused: browsers
    always send one, other clients must name the portal (README)."""
    request = _Handshake(scope)
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return False
    try:
        own = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    csrf = CsrfViewMiddleware(_no_response)
    if origin in csrf.allowed_origins_exact:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, host)
        for host in csrf.allowed_origin_subdomains.get(parsed.scheme, ())
    )


# --- client frames ---------------------------------------------------------------------------


def parse_frame(text: str | None) -> Any:
    """One client frame's JSON document, or ParamError saying what to fix; nothing else is
    raised, whatever the frame holds (binary, huge, not UTF-8, deeply nested)."""
    if text is None:
        raise ParamError("message", "send JSON text frames; binary frames are not accepted")
    too_long = f"longer than {MAX_FRAME_BYTES} bytes; send one small JSON object per frame"
    if len(text) > MAX_FRAME_BYTES:  # characters <= UTF-8 bytes: no need to encode
        raise ParamError("message", too_long)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ParamError("message", "not valid UTF-8 text") from None
    if size > MAX_FRAME_BYTES:
        raise ParamError("message", too_long)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamError("message", f"not valid JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise ParamError("message", "JSON nested too deeply; send a flat JSON object") from None
    except ValueError:
        raise ParamError("message", "not valid JSON") from None


def _subscription(message: dict[str, Any]) -> dict[str, Any] | None:
    """The subscribe a client frame asks for, or None (not one, or unreadable: the consumer
    answers those with an error)."""
    if message.get("type") != "websocket.receive":
        return None
    try:
        doc = parse_frame(message.get("text"))
    except ParamError:
        return None
    if isinstance(doc, dict) and doc.get("type") == "subscribe":
        return doc
    return None


def _printable(value: str, limit: int) -> str:
    # Client text: a lone surrogate ("\udc80") cannot be stored, so it is spelled out.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def _audit_details(subscription: dict[str, Any]) -> dict[str, Any]:
    """What a subscribe asked for, fit for the audit log: a few short, storable values."""
    details: dict[str, Any] = {}
    for key, value in list(subscription.items())[:8]:
        if key == "type":
            continue
        if isinstance(value, str):
            shown: Any = _printable(value, 100)
        elif (
            value is None
            or isinstance(value, bool)
            or (isinstance(value, int) and abs(value) < 2**53)
        ):
            shown = value
        else:
            shown = f"<{type(value).__name__}>"
        details[_printable(key, 40)] = shown
    return details


@dataclass
class SubscribeLimit:
    """One socket's subscribes: a token bucket, and when each distinct subscribe was last
    audited (so a client re-subscribing in a loop writes one row, not one per frame)."""

    burst: int = SUBSCRIBE_BURST
    per_s: float = SUBSCRIBE_PER_S
    fold_s: float = SUBSCRIBE_AUDIT_FOLD_S
    tokens: float = field(init=False)
    at: float = field(init=False)
    audited: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.at = monotonic()

    def take(self) -> bool:
        now = monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def needs_audit(self, key: str) -> bool:
        last = self.audited.get(key)
        return last is None or monotonic() - last >= self.fold_s

    def was_audited(self, key: str) -> None:
        now = monotonic()
        # Bounded by the bucket: at most burst + per_s * fold_s keys live in a window.
        self.audited = {k: t for k, t in self.audited.items() if now - t < self.fold_s}
        self.audited[key] = now

    def refusal(self) -> dict[str, Any]:
        return {
            "type": "error",
            "code": 429,
            "message": (
                f"subscribe: too many subscribes on this socket (at most {self.burst} at once, "
                f"then {self.per_s:g} per second); this one was not applied. Wait a second, "
                "then subscribe once"
            ),
        }


class WebSocketAccessMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        context = _context(scope, "anonymous")
        if not origin_allowed(scope):
            # A page elsewhere using a signed-in browser's cookie: no further look.
            logger.info("WebSocket handshake from a foreign origin refused")
            principal, code = None, CLOSE_FORBIDDEN
        else:
            with audit_context(context):
                try:
                    principal, code = await database_sync_to_async(authorize_handshake)(
                        scope, context
                    )
                except AuditWriteError:
                    principal, code = None, CLOSE_AUDIT_UNAVAILABLE
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
        limit = SubscribeLimit()

        async def guarded_send(message: dict[str, Any]) -> None:
            if not closed:
                await send(message)

        async def close(code: int) -> None:
            nonlocal closed
            if not closed:
                closed = True
                try:
                    await send({"type": "websocket.close", "code": code})
                except Exception:  # the client is gone already; the cleanup below still runs
                    logger.warning("could not send close %s to a WebSocket client", code)
            await inbox.put({"type": "websocket.disconnect", "code": code})

        async def admit(message: dict[str, Any]) -> bool | None:
            """True: pass the frame on. False: refused here (answered). None: the audit
            log cannot be written, close."""
            subscription = _subscription(message)
            if subscription is None:
                return True
            if not limit.take():
                await guarded_send({"type": "websocket.send", "text": json.dumps(limit.refusal())})
                return False
            details = _audit_details(subscription)
            key = json.dumps(details, sort_keys=True)
            if not limit.needs_audit(key):
                return True
            series = details.get("series", "")
            with audit_context(context):
                try:
                    await arecord_event(
                        "websocket.subscribe",
                        target=f"{scope.get('path', '')}:{series}",
                        details=details,
                    )
                except AuditWriteError:
                    return None
            limit.was_audited(key)
            return True

        async def pump() -> None:
            try:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.receive":
                        admitted = await admit(message)
                        if admitted is None:
                            await close(CLOSE_AUDIT_UNAVAILABLE)
                            return
                        if not admitted:
                            continue
                    await inbox.put(message)
                    if message["type"] == "websocket.disconnect":
                        return
            except asyncio.CancelledError:
                raise
            except Exception:
                # Whatever went wrong, the consumer must still hear that the socket is gone,
                # so its cleanup runs.
                logger.exception("WebSocket receive path failed; closing the socket")
                await close(CLOSE_INTERNAL)

        async def watch() -> None:
            interval = float(getattr(settings, "WS_RECHECK_INTERVAL_S", 30.0))
            while True:
                await asyncio.sleep(interval)
                try:
                    code = await database_sync_to_async(still_allowed)(principal)
                except Exception:
                    # Cannot tell whether the session still holds: fail closed.
                    logger.exception("WebSocket re-check failed; closing the socket")
                    code = CLOSE_INTERNAL
                if code:
                    await close(code)
                    return

        tasks = [asyncio.create_task(pump()), asyncio.create_task(watch())]
        try:
            return await self.inner(scope, inbox.get, guarded_send)
        finally:
            for task in tasks:
                task.cancel()
