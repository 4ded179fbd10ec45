"""The access middleware: API tokens on /api/*, then the one policy (accounts/policy.py)
for every resolved URL, before any view runs. Views cannot forget it.

- anonymous: pages redirect to /login/?next=..., /api/* answers a 401 envelope;
- signed in without the permission: 403 page or envelope, and a ``permission.denied`` event;
- a URL name the policy does not cover: denied to everyone (403 and an error log line; in
  DEBUG a 500 so the developer sees it at once).

Async-capable: under ASGI the checks run in one hop to the database thread, as Django's own
``request.auser()`` does; the middleware chain is never forced into sync mode.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve

from accounts.actions import do_note_token_used
from accounts.policy import Target, Verdict, decide
from accounts.tokens import TokenRejected, authenticate_token, bearer
from audit.context import set_actor
from audit.failures import record_failure
from audit.models import Outcome
from audit.service import AuditWriteError
from elastickv_admin.lib.api import is_api_request
from elastickv_admin.lib.errors import error_response
from elastickv_admin.lib.middleware import HybridMiddleware

logger = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def unauthorized(request: HttpRequest, message: str) -> HttpResponse:
    if is_api_request(request):
        response = error_response(401, message)
        response["WWW-Authenticate"] = 'Bearer realm="elastickv-admin"'
        return response
    return redirect_to_login(request.get_full_path())


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    if is_api_request(request):
        return error_response(403, message)
    return render(request, "accounts/denied.html", {"message": message}, status=403)


def _deny(request: HttpRequest, message: str, details: dict[str, Any]) -> HttpResponse:
    """A refusal to a known principal: audited as permission.denied."""
    record_failure(
        "permission.denied",
        reason=f"{request.method} {request.path}",
        target=request.path,
        outcome=Outcome.DENIED,
        details={"method": request.method, **details},
    )
    return forbidden(request, message)


def _authenticate_bearer(request: HttpRequest, header: str) -> HttpResponse | None:
    raw = bearer(header)
    if raw is None:
        return unauthorized(request, "Authorization must be 'Bearer <API token>'")
    try:
        token = authenticate_token(raw)
    except TokenRejected as exc:
        # Anyone can send bogus tokens: identical rejections fold into one event a window.
        record_failure(
            "api_token.rejected",
            reason=str(exc),
            target=request.path,
            outcome=Outcome.DENIED,
            details={"reason": str(exc)},
        )
        return unauthorized(request, str(exc))
    user = token.user
    request.user = user
    request.auser = _resolved(user)
    request.api_token = token  # type: ignore[attr-defined]
    # Bearer requests carry no cookies to forge: CSRF does not apply (as in DRF).
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    set_actor(user.get_username())
    if token.read_only and request.method not in READ_METHODS:
        return _deny(
            request,
            f"this API token is read-only; {request.method} needs a token marked read-write",
            {"token": token.public_id, "required": "read-write token"},
        )
    do_note_token_used(token, method=request.method or "", path=request.path)
    return None


def _resolved(user: User | AnonymousUser) -> Callable[[], Awaitable[User | AnonymousUser]]:
    async def auser() -> User | AnonymousUser:
        return user

    return auser


def _resolve_user(request: HttpRequest) -> User | AnonymousUser:
    """Resolve the lazy user once, here, so templates and async views never query for it,
    and note its permissions for the navigation."""
    lazy = request.user
    authenticated = lazy.is_authenticated
    user: User | AnonymousUser = getattr(lazy, "_wrapped", lazy)
    request.user = user
    request.auser = _resolved(user)
    set_actor(user.get_username() if authenticated else "anonymous")
    permissions = frozenset(user.get_all_permissions()) if authenticated else frozenset()
    request.portal_permissions = permissions  # type: ignore[attr-defined]
    return user


def check_access(request: HttpRequest) -> HttpResponse | None:
    """The whole decision for one request; None lets it through. Sync (database)."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        _resolve_user(request)  # nothing to protect; the 404 page shows the user's navigation
        return None
    url_name = match.view_name
    header = request.headers.get("Authorization")
    if header and is_api_request(request):
        refused = _authenticate_bearer(request, header)
        if refused is not None:
            return refused
    user = _resolve_user(request)

    session_login = getattr(request, "api_token", None) is None
    decision = decide(
        user,
        Target.page(url_name),
        second_factor_owed=session_login and not request.session.get("mfa_verified"),
    )
    match decision.verdict:
        case Verdict.ALLOW:
            return None
        case Verdict.UNMAPPED:
            message = f"URL name {url_name!r} has no entry in accounts/policy.py: denied"
            logger.error("%s (path %s)", message, request.path)
            if settings.DEBUG:
                raise ImproperlyConfigured(message)
            if not user.is_authenticated:
                return forbidden(request, decision.message)
            return _deny(request, decision.message, {"url_name": url_name})
        case Verdict.SIGN_IN:
            return unauthorized(request, decision.message)
        case Verdict.SECOND_FACTOR:
            if is_api_request(request):
                return forbidden(request, decision.message)
            return redirect("accounts:mfa")
    return _deny(request, decision.message, {"url_name": url_name, "required": decision.required})


class AccessMiddleware(HybridMiddleware):
    def handle(self, request: HttpRequest) -> Any:
        try:
            refused = check_access(request)
        except AuditWriteError as exc:
            from audit.middleware import audit_unavailable_response

            return audit_unavailable_response(request, exc)
        return refused if refused is not None else self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            refused = await database_sync_to_async(check_access)(request)
        except AuditWriteError as exc:
            from audit.middleware import audit_unavailable_response

            return audit_unavailable_response(request, exc)
        if isinstance(refused, HttpResponse):
            return refused
        response = await self.get_response(request)  # type: ignore[misc]
        assert isinstance(response, HttpResponseBase)
        return response
