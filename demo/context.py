"""The demo banner on every page while `elastickv-admin demo` runs (never under serve)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest


def demo_banner(request: HttpRequest) -> dict[str, object]:
    if not settings.DEMO:
        return {}
    before_ms = settings.DEMO_HISTORY_BEFORE_MS
    when = (
        datetime.fromtimestamp(before_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if before_ms
        else ""  # --preset small writes none
    )
    return {"demo_banner": {"history_before": when, "profile": settings.DEMO_PROFILE}}
