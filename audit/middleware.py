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
from audit.failures import arecord_failure, record_failure
from audit.models import Outcome
from audit.service import AuditWriteError, arecord_event, record_event
from elastickv_admin.lib.api import is_api_request
from elastickv_admin.lib.errors import error_response
from elastickv_admin.lib.middleware import HybridMiddleware
from elastickv_admin.lib.net import client_ip

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


def _record(**event: Any) -> None:
    """A refused or failed request from one source repeats at will: fold identical ones."""
    if event["outcome"] == Outcome.SUCCESS:
        record_event(**event)
    else:
        record_failure(**event, reason=_fold_reason(event))


async def _arecord(**event: Any) -> None:
    if event["outcome"] == Outcome.SUCCESS:
        await arecord_event(**event)
    else:
        await arecord_failure(**event, reason=_fold_reason(event))


def _fold_reason(event: dict[str, Any]) -> str:
    # The URL name, not the path: an unresolvable path per request must not open a window each.
    return f"{event['details']['status']} {event['details']['url_name']}"


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
                    _record(**_request_event(request, response))
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
                    await _arecord(**_request_event(request, response))
                except AuditWriteError as exc:
                    response = audit_unavailable_response(request, exc)
        response[REQUEST_ID_HEADER] = context.request_id
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, AuditWriteError):
            return audit_unavailable_response(request, exception)
        return None
