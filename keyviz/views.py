from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def heatmap(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Key Visualizer"}, status=501)
