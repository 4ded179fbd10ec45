"""The cluster pages and their JSON API: parse the query, call a service, render.

Views are async so concurrent page loads fan out concurrently (sync views under ASGI
share one thread). A page is rendered whole, or, when htmx refreshes its live region
(HX-Target "live"), as just that region; both vary on HX-Request. Every page works
without JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from cluster import serialize, services
from cluster.params import parse_route_query, parse_route_query_lenient
from elastickv_admin.lib.api import ApiResult, api_view
from elastickv_admin.lib.errors import ApiError
from elastickv_admin.lib.pages import HtmxHttpRequest, arender_page

SORT_LABELS = {
    "start": "Key order",
    "route": "Route id",
    "group": "Group",
    "leader": "Leader",
    "state": "State",
    "parent": "Parent route",
    "split_hlc": "Split HLC",
}
SORT_OPTIONS = [
    (prefix + key, f"{label} {arrow}")
    for key, label in SORT_LABELS.items()
    for prefix, arrow in (("", "↑"), ("-", "↓"))
]
LIVE_TARGET = "live"  # id of the element htmx refreshes on every page
REFRESH_S = 5  # auto-refresh period of the live region
NOSCRIPT_REFRESH_S = 15  # without JavaScript, the whole page reloads this often
FILL_IN_S = 1  # while nodes are awaited, the live region asks again this soon


async def _page(
    request: HtmxHttpRequest, name: str, context: Mapping[str, Any], *, status: int = 200
) -> HttpResponse:
    """``cluster/<name>.html``, or its live region ``cluster/partials/<name>.html`` when
    htmx refreshes it (HX-Target "live")."""
    full = {
        **context,
        "refresh_s": REFRESH_S,
        "noscript_refresh_s": NOSCRIPT_REFRESH_S,
        "live_target": LIVE_TARGET,
        "live_trigger": _trigger(context.get("health")),
    }
    return await arender_page(
        request,
        f"cluster/{name}.html",
        full,
        partial=f"cluster/partials/{name}.html",
        target=LIVE_TARGET,
        status=status,
    )


def _trigger(health: Any) -> str:
    """When htmx refreshes the live region: soon while nodes are awaited (their answers
    fill in without holding the page), otherwise on the live period."""
    if health is not None and health.waiting:
        return f"load delay:{FILL_IN_S}s"
    return f"every {REFRESH_S}s"


@require_safe
async def overview(request: HtmxHttpRequest) -> HttpResponse:
    view = await services.overview()
    return await _page(request, "overview", {"view": view, "health": view.health})


@require_safe
async def nodes(request: HtmxHttpRequest) -> HttpResponse:
    view = await services.list_nodes()
    return await _page(request, "nodes", {"view": view, "health": view.health})


@require_safe
async def node(request: HtmxHttpRequest, node: str) -> HttpResponse:
    detail = await services.node_detail(node)
    if detail is None:
        health = await services.cluster_health()
        context = {"health": health, "missing": node, "detail": None}
        return await _page(request, "node_detail", context, status=404)
    return await _page(request, "node_detail", {"detail": detail, "health": detail.health})


@require_safe
async def raft(request: HtmxHttpRequest) -> HttpResponse:
    view = await services.raft_groups()
    return await _page(request, "raft", {"view": view, "health": view.health})


@require_safe
async def routes(request: HtmxHttpRequest) -> HttpResponse:
    query, errors = parse_route_query_lenient(request.GET)
    view = await services.routes(query)
    context = {
        "view": view,
        "health": view.health,
        "errors": errors,
        "sort_options": SORT_OPTIONS,
    }
    return await _page(request, "routes", context)


@require_safe
async def adapters(request: HtmxHttpRequest) -> HttpResponse:
    view = await services.adapters()
    return await _page(request, "adapters", {"view": view, "health": view.health})


# -- JSON API (elastickv_admin.lib.api: GET only, loopback only, the error envelope) -----------


@api_view
async def api_overview(request: HttpRequest) -> ApiResult:
    return serialize.overview_json(await services.overview())


@api_view
async def api_nodes(request: HttpRequest) -> ApiResult:
    return serialize.nodes_json(await services.list_nodes())


@api_view
async def api_node(request: HttpRequest, node: str) -> ApiResult:
    detail = await services.node_detail(node)
    if detail is None:
        health = await services.cluster_health()
        known = ", ".join(n.label for n in health.nodes) or "none"
        raise ApiError(404, f"no node {node!r} in the membership (known: {known})")
    return serialize.node_detail_json(detail)


@api_view
async def api_raft_groups(request: HttpRequest) -> ApiResult:
    return serialize.raft_json(await services.raft_groups())


@api_view
async def api_routes(request: HttpRequest) -> ApiResult:
    query = parse_route_query(request.GET)
    return serialize.routes_json(await services.routes(query))


@api_view
async def api_adapters(request: HttpRequest) -> ApiResult:
    return serialize.adapters_json(await services.adapters())
