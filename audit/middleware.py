"""Request id, audit context, and one event for every mutating request.

Async-capable: under ASGI it never forces a switch to sync; events are written through
``arecord_event`` in a worker thread. A mutating request whose view already recorded its
own event (login, token created, ...) is not recorded twice; every other one (a form that
failed validation, a CSRF refusal) gets an ``http.<method>`` event with its status.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string

from audit.context import AuditContext, audit_context, new_request_id
from audit.models import Outcome
from audit.service import AuditWriteError, arecord_event, record_event
from elastickv_admin.api import is_api_request
from elastickv_admin.errors import error_response
from elastickv_admin.middleware import HybridMiddleware
from elastickv_admin.net import client_ip

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
REQUEST_ID_HEADER = "X-Request-ID"


def audit_unavailable_response(request: HttpRequest, error: AuditWriteError) -> HttpResponse:
    message = f"{error} (request {getattr(request, 'request_id', '-')})"
    if is_api_request(request):
        return error_response(503, message)
    # A self-contained page: when the database is down, the full layout cannot render.
    html = render_to_string("audit/unavailable.html", {"message": message})
    return HttpResponse(html, status=503)


def _outcome(status: int) -> str:
    if status in (401, 403):
        return Outcome.DENIED
    if status >= 500:
        return Outcome.ERROR
    return Outcome.FAILURE if status >= 400 else Outcome.SUCCESS


def _request_event(request: HttpRequest, response: HttpResponseBase) -> dict[str, Any]:
    match = getattr(request, "resolver_match", None)
    return {
        "action": f"http.{(request.method or 'unknown').lower()}",
        "target": request.path,
        "outcome": _outcome(response.status_code),
        "details": {
            "status": response.status_code,
            "url_name": match.view_name if match else "",
        },
    }


class AuditMiddleware(HybridMiddleware):
    def _context(self, request: HttpRequest) -> AuditContext:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        return AuditContext(
            request_id=request_id,
            source_ip=client_ip(request),
            user_agent=request.headers.get("User-Agent", "")[:300],
        )

    def _needs_event(self, request: HttpRequest, context: AuditContext) -> bool:
        return (
            request.method not in SAFE_METHODS and not context.events and not (context.write_failed)
        )

    def handle(self, request: HttpRequest) -> Any:
        context = self._context(request)
        with audit_context(context):
            response = self.get_response(request)
            assert isinstance(response, HttpResponseBase)
            if self._needs_event(request, context):
                try:
                    record_event(**_request_event(request, response))
                except AuditWriteError as exc:
                    response = audit_unavailable_response(request, exc)
        response[REQUEST_ID_HEADER] = context.request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        context = self._context(request)
        with audit_context(context):
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
            if self._needs_event(request, context):
                try:
                    await arecord_event(**_request_event(request, response))
                except AuditWriteError as exc:
                    response = audit_unavailable_response(request, exc)
        response[REQUEST_ID_HEADER] = context.request_id
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, AuditWriteError):
            return audit_unavailable_response(request, exception)
        return None
