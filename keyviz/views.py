from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from elastickv_admin.api import ApiResult, api_view
from elastickv_admin.errors import ApiError
from keyviz import serialize, service
from keyviz.params import parse_matrix_query


def heatmap(request: HttpRequest) -> HttpResponse:
    return render(request, "not_built.html", {"room": "Key Visualizer"}, status=501)


def _no_node_answered(statuses: list[dict[str, Any]]) -> ApiError:
    reasons = "; ".join(f"{s['node']}: {s['error']}" for s in statuses) or "no nodes known"
    return ApiError(503, f"no node answered GetKeyVizMatrix ({reasons})")


@api_view
async def api_matrix(request: HttpRequest) -> ApiResult:
    query = parse_matrix_query(request.GET, now_ms=int(time.time() * 1000))
    result = await service.fetch_matrix(query)
    nodes = [s.to_dict() for s in result.statuses]
    if not result.responded:
        raise _no_node_answered(nodes)
    if query.format == "bin":
        body = serialize.matrix_to_binary(result.matrix, nodes=nodes)
        return HttpResponse(body, content_type="application/octet-stream")
    return serialize.matrix_to_json(result.matrix, nodes=nodes)


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
    return serialize.bucket_to_json(detail, nodes=nodes)
