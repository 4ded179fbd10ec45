"""Prometheus metrics, correct with several portal processes.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (``elastickv-admin serve`` sets it to
``<dataDir>/metrics`` and clears it at start), every process writes its samples
there and ``/metrics`` aggregates all of them, so a scrape through the reverse
proxy sees the whole deployment whichever process answers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

log = logging.getLogger(__name__)

# Every label takes its values from a closed set; whatever falls outside it is "other".
# A series is never forgotten (least of all in multiprocess mode), so a label fed by
# request or node data would let anyone grow the portal's memory and every scrape.
OTHER = "other"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "elastickv_admin_request_seconds",
    "Portal HTTP request latency",
    ["view", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
NODE_RPC_SECONDS = Histogram(
    "elastickv_admin_node_rpc_seconds",
    "Latency of gRPC calls to nodes",
    ["node", "method", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
NODE_RPC_ERRORS = Counter(
    "elastickv_admin_node_rpc_errors_total",
    "Failed gRPC calls to nodes, by status code",
    ["node", "method", "code"],
)
FANOUT_SECONDS = Histogram(
    "elastickv_admin_fanout_seconds",
    "Duration of a fan-out to every known node",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
WEBSOCKET_VIEWERS = Gauge(
    "elastickv_admin_websocket_viewers",
    "Open live-stream WebSockets",
    multiprocess_mode="livesum",
)
LIVE_COLUMN_LAG_SECONDS = Histogram(
    "elastickv_admin_live_column_lag_seconds",
    "Time from a column's timestamp (node flush) to its broadcast to viewers",
    ["series"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)


class BoundedLabels:
    """Label values from an open set (node addresses): the first ``limit`` distinct values
    keep their own label for the life of the process, any later one is "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def label(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


def method_label(method: str | None) -> str:
    return method if method in HTTP_METHODS else OTHER


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


def registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    aggregated = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
    return aggregated


# Exposition text from the apps above this module (keyviz's hot-range gauges), registered
# by their AppConfig.ready(): the foundation never imports them.
_expositions: list[Callable[[], Awaitable[bytes]]] = []


def add_exposition(source: Callable[[], Awaitable[bytes]]) -> None:
    if source not in _expositions:
        _expositions.append(source)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    body = generate_latest(registry())
    for source in _expositions:
        body += await source()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware:
    """Request latency by URL name (not path: paths carry ids and would explode labels),
    standard HTTP method and status; anything else is "other"."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> Any:
        started = time.perf_counter()
        response = await self.get_response(request)
        match = getattr(request, "resolver_match", None)
        # URL names come from the URLconf (code), never from the request.
        view = match.view_name if match else OTHER
        REQUEST_SECONDS.labels(
            view, method_label(request.method), status_label(response.status_code)
        ).observe(time.perf_counter() - started)
        return response
