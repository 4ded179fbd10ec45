"""The audit log for auditors: filtered list (newest first, keyset pages), event detail,
CSV and JSON-lines export of the filtered set (streamed)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from accounts.models import get_site_settings
from audit.chain import verify_event
from audit.models import AuditEvent, Outcome
from audit.query import KNOWN_ACTIONS, AuditFilters, FilterError, export_async, export_sync, page
from audit.service import do_note_export

FORMATS = {"csv": ("text/csv; charset=utf-8", "csv"), "jsonl": ("application/jsonl", "jsonl")}


@never_cache
def event_list(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        filters = AuditFilters.parse(request.GET)
        result = page(
            filters, before=request.GET.get("before", ""), after=request.GET.get("after", "")
        )
    except FilterError as exc:
        error = str(exc)
        filters, result = AuditFilters(), None
    return render(
        request,
        "audit/list.html",
        {
            "filters": filters,
            "params": request.GET,
            "page": result,
            "error": error,
            "actions": KNOWN_ACTIONS,
            "outcomes": Outcome.values,
            # Encoded: a search for "a&b=c" must export and page through the same events.
            "query": urlencode(filters.raw),
            "retention_days": get_site_settings().audit_retention_days,
        },
        status=400 if error else 200,
    )


@never_cache
def event_detail(request: HttpRequest, seq: int) -> HttpResponse:
    event = get_object_or_404(AuditEvent, seq=seq)
    return render(
        request,
        "audit/detail.html",
        {
            "event": event,
            "mac_ok": verify_event(event),
            "details_json": json.dumps(event.details, indent=2, sort_keys=True),
            "previous": AuditEvent.objects.filter(seq__lt=seq).order_by("-seq").first(),
            "next": AuditEvent.objects.filter(seq__gt=seq).order_by("seq").first(),
        },
    )


def export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    fmt = request.GET.get("format", "csv")
    if fmt not in FORMATS:
        return HttpResponse("format: csv or jsonl", status=400, content_type="text/plain")
    try:
        filters = AuditFilters.parse(request.GET)
    except FilterError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    do_note_export(request.user, fmt, filters.raw)
    content_type, extension = FORMATS[fmt]
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    content = (
        export_async(filters, fmt)
        if isinstance(request, ASGIRequest)
        else export_sync(filters, fmt)
    )
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{extension}"'
    response["Cache-Control"] = "no-store"
    return response
