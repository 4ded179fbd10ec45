from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from elastickv_admin.api import ApiResult, api_view
from elastickv_admin.config import portal_config
from elastickv_admin.errors import ApiError
from keyviz import serialize, service
from keyviz.budgets import DEFAULT_ROWS, MAX_ROWS
from keyviz.keys import RESERVED_PREFIXES
from keyviz.params import parse_matrix_query

SERIES_CHOICES = (
    ("writes", "Writes"),
    ("reads", "Reads"),
    ("write_bytes", "Write bytes"),
    ("read_bytes", "Read bytes"),
)
WINDOW_PRESETS = (("15m", "15 m"), ("1h", "1 h"), ("6h", "6 h"), ("24h", "24 h"))
ROW_BUDGETS = (64, 128, DEFAULT_ROWS, 512, MAX_ROWS)


@require_safe
def heatmap(request: HttpRequest) -> HttpResponse:
    """The Key Visualizer page. Its state (series, window, zoom, budget, brightness,
    live) lives in the query string and is read by static/js/heatmap.js."""
    context = {
        "series_choices": SERIES_CHOICES,
        "window_presets": WINDOW_PRESETS,
        "row_budgets": ROW_BUDGETS,
        "default_rows": DEFAULT_ROWS,
        "reserved_prefixes": [
            (prefix.decode("ascii"), label) for prefix, label in RESERVED_PREFIXES
        ],
        "matrix_url": reverse("keyviz:api-matrix"),
        "bucket_url": reverse("keyviz:api-bucket", args=["BUCKET"]).removesuffix("BUCKET"),
        "routes_url": reverse("cluster:routes"),
        "raft_url": reverse("cluster:raft"),
        # Conflict marks exist only when writes are deduplicated (DESIGN rule 4).
        "writes_dedupe": portal_config().writes_merge == "dedupe",
    }
    return render(request, "keyviz/heatmap.html", context)


def _no_node_answered(statuses: list[dict[str, Any]]) -> ApiError:
    reasons = "; ".join(f"{s['node']}: {s['error']}" for s in statuses) or "no nodes known"
    return ApiError(503, f"no node answered GetKeyVizMatrix ({reasons})")


@api_view
async def api_matrix(request: HttpRequest) -> ApiResult:
    query = parse_matrix_query(request.GET, now_ms=int(time.time() * 1000))
    clock = service.Stopwatch()
    result = await service.fetch_matrix(query, clock)
    nodes = [s.to_dict() for s in result.statuses]
    if not result.responded:
        raise _no_node_answered(nodes)
    response: HttpResponse
    if query.format == "bin":
        body = serialize.matrix_to_binary(result.matrix, nodes=nodes)
        response = HttpResponse(body, content_type="application/octet-stream")
    else:
        response = JsonResponse(serialize.matrix_to_json(result.matrix, nodes=nodes))
    clock.lap("encode")
    response["Server-Timing"] = clock.server_timing()
    return response


@api_view
async def api_bucket(request: HttpRequest, bucket_id: str) -> ApiResult:
    query = parse_matrix_query(request.GET, now_ms=int(time.time() * 1000))
    try:
        detail = await service.fetch_bucket(query, bucket_id)
    except KeyError:
        raise ApiError(
            404, f"no row with bucket id {bucket_id!r} in this window; widen from/to"
        ) from None
    nodes = [s.to_dict() for s in detail.statuses]
    if not any(s["ok"] for s in nodes):
        raise _no_node_answered(nodes)
    doc = serialize.bucket_to_json(detail, nodes=nodes)
    # The Raft groups behind the row and who leads them now (for the cell detail).
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
    return doc
