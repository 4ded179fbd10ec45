from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from elastickv_admin.api import is_api_request
from elastickv_admin.errors import error_response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return error_response(400, "bad request")
    return render(request, "error.html", {"status": 400, "title": "Bad request"}, status=400)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return error_response(404, f"no API endpoint at {request.path}")
    return render(request, "error.html", {"status": 404, "title": "Page not found"}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return error_response(500, "internal error; the portal log has the details")
    return render(request, "error.html", {"status": 500, "title": "Server error"}, status=500)
