from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import REASON_BAD_ORIGIN, REASON_NO_CSRF_COOKIE
from django.shortcuts import render

from elastickv_admin.lib.api import is_api_request
from elastickv_admin.lib.errors import error_response

logger = logging.getLogger(__name__)

# The styled error pages say what happened and what to do, never why in detail: an
# exception's text or a stack trace belongs in the portal log, not in a page.
MESSAGES = {
    400: "The request could not be understood. Go back and try again.",
    403: "You may not open this page. Roles are granted by a portal admin.",
    500: "Something went wrong on the portal's side; the portal log has the details.",
}


def _page(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    context = {"status": status, "title": title, "message": message}
    return render(request, "error.html", context, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return error_response(400, "bad request")
    return _page(request, 400, "Bad request", MESSAGES[400])


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return error_response(403, "forbidden")
    return _page(request, 403, "Permission denied", MESSAGES[403])


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return error_response(404, f"no API endpoint at {request.path}")
    return _page(request, 404, "Page not found", "")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the portal's page instead of Django's bare 403, with what to do."""
    logger.warning("CSRF check failed: %s (path %s)", reason, request.path)
    if reason == REASON_NO_CSRF_COOKIE:
        hint = "Your browser did not send the portal's cookie: allow cookies for this site."
    elif reason.startswith(REASON_BAD_ORIGIN.split("%", 1)[0]):
        hint = (
            "The request came from another origin than the portal's address. Behind a "
            "proxy, an admin adds the portal's public address to CSRF_TRUSTED_ORIGINS."
        )
    else:
        hint = "The form was open too long or the session changed."
    message = f"The form's security check failed. {hint} Go back, reload the page and submit again."
    if is_api_request(request):
        return error_response(
            403, "CSRF check failed: send the X-CSRFToken header or a Bearer token"
        )
    return _page(request, 403, "Form expired", message)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return error_response(500, "internal error; the portal log has the details")
    try:
        return _page(request, 500, "Server error", MESSAGES[500])
    except Exception:  # the page itself failed (the database is down?): a plain answer
        logger.exception("the 500 page could not be rendered")
        return HttpResponse(
            "<!doctype html><title>Server error</title><h1>Server error</h1>"
            f"<p>{MESSAGES[500]}</p>",
            status=500,
        )
