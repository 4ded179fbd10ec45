from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Overview"}, status=501)


def nodes(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Nodes"}, status=501)


def raft(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Raft groups"}, status=501)


def routes(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Routes"}, status=501)


def adapters(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Adapters"}, status=501)
