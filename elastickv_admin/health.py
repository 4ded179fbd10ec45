"""Liveness and readiness for load balancers and orchestrators.

``/healthz`` answers while the process runs. ``/readyz`` says whether this
process can do its job: the database answers, the channel layer delivers, and
at least one node answered discovery. Neither needs a login, and neither
includes a secret (addresses and counts only).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.cache import add_never_cache_headers

from cluster.runtime import discovery

CHECK_TIMEOUT_S = 2.0


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


async def _channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    return {"ok": message.get("type") == "readyz.ping", "backend": type(layer).__name__}


async def _nodes() -> dict[str, Any]:
    membership = await discovery().membership()
    answered = bool(membership.source)
    result: dict[str, Any] = {"ok": answered, "known": len(membership.nodes)}
    if answered:
        result["answered_by"] = membership.source
    else:
        result["error"] = "no seed answered GetClusterOverview"
        result["seed_errors"] = {a: e.message for a, e in membership.seed_errors.items()}
    return result


async def _timed(name: str, check: Any) -> tuple[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # any failure means "not ready", with its reason
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return name, result


async def healthz(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"status": "ok"})
    add_never_cache_headers(response)
    return response


async def readyz(request: HttpRequest) -> JsonResponse:
    checks = dict(
        await asyncio.gather(
            _timed("database", sync_to_async(_database, thread_sensitive=False)()),
            _timed("channel_layer", _channel_layer()),
            _timed("nodes", _nodes()),
        )
    )
    ready = all(c["ok"] for c in checks.values())
    failed = [name for name, c in checks.items() if not c["ok"]]
    response = JsonResponse(
        {"ready": ready, "failed": failed, "checks": checks}, status=200 if ready else 503
    )
    add_never_cache_headers(response)
    return response
