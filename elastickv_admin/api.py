"""The JSON API's one wrapper: method check, access check, the error envelope.

Views decorated with ``api_view`` return a dict (sent as JSON) or a ready
HttpResponse (binary formats); errors raised as ApiError or a ParamError come
back as ``{"code", "message"}`` with the matching status.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, TypeAlias

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from elastickv_admin.errors import ApiError, error_response

ApiResult: TypeAlias = dict[str, Any] | HttpResponse
ApiView: TypeAlias = Callable[..., Awaitable[ApiResult]]


def _loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def api_view(view: ApiView) -> Callable[..., Coroutine[Any, Any, HttpResponse]]:
    """GET only, loopback clients only (until the API has authentication), errors as the
    one envelope, never cached."""

    @wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            refused = error_response(405, f"{request.method} is not allowed here; use GET")
            refused["Allow"] = "GET, HEAD"
            return refused
        if not _loopback(request):
            return error_response(
                403, "the JSON API answers loopback clients only until it has authentication"
            )
        try:
            result = await view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, str(exc))
        response = result if isinstance(result, HttpResponse) else JsonResponse(result)
        add_never_cache_headers(response)
        return response

    return endpoint
