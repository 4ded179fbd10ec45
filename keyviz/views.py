from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from elastickv_admin.lib.api import ApiResult, api_view
from elastickv_admin.lib.config import portal_config
from elastickv_admin.lib.errors import ApiError
from keyviz import events, hot, serialize, service
from keyviz.budgets import DEFAULT_ROWS, MAX_COLS, MAX_ROWS
from keyviz.keys import RESERVED_PREFIXES
from keyviz.messages import FLAG_BITS
from keyviz.params import DEFAULT_PRESET, WINDOW_PRESET_MS, WINDOW_PRESETS, parse_matrix_query

SERIES_CHOICES = (
    ("writes", "Writes"),
    ("reads", "Reads"),
    ("write_bytes", "Write bytes"),
    ("read_bytes", "Read bytes"),
)
ROW_BUDGETS = (64, 128, DEFAULT_ROWS, 512, MAX_ROWS)


def page_config() -> dict[str, Any]:
    """What the heatmap's scripts share with the server (one copy: here), sent to the page
    as JSON (json_script "kv-config"): series, window presets, limits and flag bits."""
    return {
        "series": [value for value, _ in SERIES_CHOICES],
        "ranges_ms": {value: WINDOW_PRESET_MS[value] for value, _ in WINDOW_PRESETS},
        "default_range": DEFAULT_PRESET,
        "max_rows": MAX_ROWS,
        "max_cols": MAX_COLS,
        "default_rows": DEFAULT_ROWS,
        "flags": dict(FLAG_BITS),
        "reserved_prefixes": [
            [prefix.decode("ascii"), label] for prefix, label in RESERVED_PREFIXES
        ],
    }


@require_safe
def heatmap(request: HttpRequest) -> HttpResponse:
    """The Key Visualizer page. Its state (series, window, zoom, budget, brightness,
    live) lives in the query string and is read by static/js/heatmap.js."""
    context = {
        "series_choices": SERIES_CHOICES,
        "window_presets": WINDOW_PRESETS,
        "row_budgets": ROW_BUDGETS,
        "default_rows": DEFAULT_ROWS,
        "default_preset": DEFAULT_PRESET,
        "page_config": page_config(),
        "matrix_url": reverse("keyviz:api-matrix"),
        "bucket_url": reverse("keyviz:api-bucket", args=["BUCKET"]).removesuffix("BUCKET"),
        "routes_url": reverse("cluster:routes"),
        "raft_url": reverse("cluster:raft"),
        "events_url": reverse("keyviz:api-events"),
        # Conflict marks exist only when writes are deduplicated (DESIGN rule 4).
        "writes_dedupe": portal_config().writes_merge == "dedupe",
        # Without JavaScript the page shows this instead (keyviz/_noscript.html).
        "noscript": hot.window_summary(request.GET, now_ms=int(time.time() * 1000)),
    }
    return render(request, "keyviz/heatmap.html", context)


def _store_unavailable(exc: service.StoreUnavailable) -> ApiError:
    return ApiError(503, f"the KeyViz history could not be read from the portal database: {exc}")


@api_view
async def api_matrix(request: HttpRequest) -> ApiResult:
    """The matrix of a window, from the store. No collector yet: 200, an empty matrix,
    `collector: null` and a `message` the page shows; an unreadable store: 503."""
    query = parse_matrix_query(request.GET, now_ms=int(time.time() * 1000))
    clock = service.Stopwatch()
    try:
        result = await service.fetch_matrix(query, clock)
    except service.StoreUnavailable as exc:
        raise _store_unavailable(exc) from None
    extra: dict[str, Any] = {
        "collector": result.collector,
        "tier": result.tier,
        "tier_step_ms": result.tier_step_ms,
        "missing_nodes": result.missing_nodes,
        "message": result.message,
    }
    response: HttpResponse
    if query.format == "bin":
        body = serialize.matrix_to_binary(result.matrix, nodes=result.nodes, extra=extra)
        response = HttpResponse(body, content_type="application/octet-stream")
    else:
        response = JsonResponse(
            serialize.matrix_to_json(result.matrix, nodes=result.nodes, extra=extra)
        )
    clock.lap("encode")
    response["Server-Timing"] = clock.server_timing()
    return response


@api_view
async def api_bucket(request: HttpRequest, bucket_id: str) -> ApiResult:
    query = parse_matrix_query(request.GET, now_ms=int(time.time() * 1000))
    at_ms = events.parse_cell_at(request.GET)  # checked before any read
    try:
        detail = await service.fetch_bucket(query, bucket_id)
    except service.StoreUnavailable as exc:
        raise _store_unavailable(exc) from None
    except KeyError:
        raise ApiError(
            404, f"no row with bucket id {bucket_id!r} in this window; widen from/to"
        ) from None
    doc = serialize.bucket_to_json(detail, nodes=detail.nodes)
    # The Raft groups behind the row and who leads them now (cluster data, for the cell
    # detail; not KeyViz data).
    groups = sorted({c.raft_group_id for c in detail.contributions if c.raft_group_id})
    leaders = await service.current_leaders() if groups else {}
    doc["groups"] = [
        {
            "raft_group_id": g,
            "leader_node_id": leaders.get(g, ("", 0))[0],
            "leader_term": leaders.get(g, ("", 0))[1],
        }
        for g in groups
    ]
    # The cluster timeline around the cell, for the drawer (README "Cluster timeline").
    near = events.cell_window(at_ms, detail.matrix.step_ms, query.from_unix_ms, query.to_unix_ms)
    try:
        timeline = await sync_to_async(events.read_events)(near)
    except DatabaseError as exc:
        raise ApiError(503, f"the cluster timeline could not be read: {exc}") from None
    doc["events_from_unix_ms"] = near.from_ms
    doc["events_to_unix_ms"] = near.to_ms
    doc["events"] = timeline["events"]
    return doc


def _hot_unavailable(exc: hot.StoreUnavailable) -> ApiError:
    return ApiError(503, f"the KeyViz history could not be read from the portal database: {exc}")


@api_view
async def api_hot_ranges(request: HttpRequest) -> ApiResult:
    """The key ranges with the most traffic in a window (README "Hot ranges")."""
    query = hot.parse_hot_query(request.GET, now_ms=int(time.time() * 1000))
    try:
        return await hot.fetch_hot_ranges(query)
    except hot.StoreUnavailable as exc:
        raise _hot_unavailable(exc) from None


def _heatmap_link(doc: dict[str, Any], entry: dict[str, Any]) -> str:
    """The heatmap zoomed on the entry's key range, from its hot start (or the window's)."""
    start = entry["hot_since_unix_ms"] or doc["from_unix_ms"]
    params = {"series": doc["series"], "from": min(start, doc["from_unix_ms"])}
    params["to"] = doc["to_unix_ms"]
    if entry["start_key"]:
        params["start_key"] = entry["start_key"]
    if entry["end_key"]:
        params["end_key"] = entry["end_key"]
    return f"{reverse('keyviz:heatmap')}?{urlencode(params)}"


def _spark_points(values: list[int], width: int = 120, height: int = 20) -> str:
    """An SVG polyline's points for a sparkline (y grows downwards)."""
    top = max(values, default=0) or 1
    step = width / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - v * height / top:.1f}" for i, v in enumerate(values))


@require_safe
async def hot_ranges(request: HttpRequest) -> HttpResponse:
    """The Hot ranges page: the API's document, rendered; a bad parameter or an unreadable
    store shows its message (400 / 503) above the controls."""
    context: dict[str, Any] = {
        "series_choices": SERIES_CHOICES,
        "windows": list(hot.WINDOWS),
        "series": request.GET.get("series") or "writes",
        "window": request.GET.get("window") or ("" if request.GET.get("from") else "5m"),
        "api_url": f"{reverse('keyviz:api-hot-ranges')}?{request.GET.urlencode()}",
    }
    try:
        query = hot.parse_hot_query(request.GET, now_ms=int(time.time() * 1000))
        doc = await hot.fetch_hot_ranges(query)
    except ApiError as exc:
        return render(request, "keyviz/hot.html", {**context, "error": str(exc)}, status=exc.status)
    except hot.StoreUnavailable as exc:
        error = str(_hot_unavailable(exc))
        return render(request, "keyviz/hot.html", {**context, "error": error}, status=503)
    for entry in doc["entries"]:
        entry["heatmap_url"] = _heatmap_link(doc, entry)
        entry["share_pct"] = entry["share"] * 100
        entry["spark_points"] = _spark_points(entry["sparkline"])
    return render(request, "keyviz/hot.html", {**context, "doc": doc})


async def _events_doc(request: HttpRequest) -> dict[str, Any]:
    query = events.parse_event_query(request.GET, now_ms=int(time.time() * 1000))
    try:
        doc: dict[str, Any] = await sync_to_async(events.read_events)(query)
    except DatabaseError as exc:
        raise ApiError(503, f"the cluster timeline could not be read: {exc}") from None
    return doc


@api_view
async def api_events(request: HttpRequest) -> ApiResult:
    """The cluster timeline (README "Cluster timeline")."""
    return await _events_doc(request)


@require_safe
async def events_page(request: HttpRequest) -> HttpResponse:
    """The Events page: the timeline with its type and time filters."""
    context: dict[str, Any] = {
        "types": events.TYPES,
        "chosen": [t for t in (request.GET.get("type") or "").split(",") if t],
        "api_url": f"{reverse('keyviz:api-events')}?{request.GET.urlencode()}",
        "from_value": events.utc_input(request.GET.get("from", "")),
        "to_value": events.utc_input(request.GET.get("to", "")),
    }
    try:
        doc = await _events_doc(request)
    except ApiError as exc:
        return render(
            request, "keyviz/events.html", {**context, "error": str(exc)}, status=exc.status
        )
    return render(request, "keyviz/events.html", {**context, "doc": doc})
