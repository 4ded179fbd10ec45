"""The JSON API's one wrapper: method check, access check, the error envelope.

Views decorated with ``api_view`` return a dict (sent as JSON) or a ready
HttpResponse (binary formats); errors raised as ApiError or a ParamError come
back as ``{"code", "message"}`` with the matching status.

Authentication and authorization happen before the view, in
accounts.middleware.AccessMiddleware (session or ``Authorization: Bearer`` API token, then
the policy table); the wrapper refuses an unauthenticated request as well, so an endpoint
is never open even if that middleware were missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, TypeAlias

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from elastickv_admin.lib.errors import ApiError, error_response

ApiResult: TypeAlias = dict[str, Any] | HttpResponse


def is_api_request(request: HttpRequest) -> bool:
    """Machine endpoints: errors are the JSON envelope, authentication may be a Bearer
    token, and an anonymous caller gets 401 rather than the sign-in page."""
    return request.path.startswith("/api/") or request.path == "/metrics"


ApiView: TypeAlias = Callable[..., Awaitable[ApiResult]]


def api_view(view: ApiView) -> Callable[..., Coroutine[Any, Any, HttpResponse]]:
    """GET only, authenticated callers only, errors as the one envelope, never cached."""

    @wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            refused = error_response(405, f"{request.method} is not allowed here; use GET")
            refused["Allow"] = "GET, HEAD"
            return refused
        user = await request.auser()
        if not user.is_authenticated:
            refused = error_response(401, "authentication required: sign in or send a Bearer token")
            refused["WWW-Authenticate"] = 'Bearer realm="elastickv-admin"'
            return refused
        try:
            result = await view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, str(exc))
        response = result if isinstance(result, HttpResponse) else JsonResponse(result)
        add_never_cache_headers(response)
        return response

    return endpoint
