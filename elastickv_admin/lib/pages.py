"""One way to answer a page that htmx refreshes: the whole page, or just its partial.

Views type their request as ``HtmxHttpRequest`` (django-htmx's ``HtmxMiddleware`` sets
``request.htmx``) and answer with ``render_page``; nothing else branches on ``request.htmx``.
A page's full template includes its partial by the name render_page passes
(``{% include partial_template %}``), so the region htmx swaps is written once and the whole
page and the htmx answer cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_partial(request: HtmxHttpRequest, target: str | None = None) -> bool:
    """An htmx request for the partial: any htmx request, or, with `target`, one whose
    HX-Target is that element (a link elsewhere on the page gets the whole page)."""
    if not request.htmx:
        return False
    return target is None or request.htmx.target == target


def render_page(
    request: HtmxHttpRequest,
    template: str,
    context: Mapping[str, Any],
    *,
    partial: str,
    target: str | None = None,
    status: int = 200,
    cache: bool = False,
) -> HttpResponse:
    """`template` (the whole page) or, for htmx, `partial`; the context gets ``partial``
    (True in the partial answer) and ``partial_template`` (for the page to include). The
    answer varies on HX-Request (and HX-Target when the choice depends on it), so no cache
    hands one for the other; live pages are never cached unless `cache`."""
    is_partial = wants_partial(request, target)
    context = {**context, "partial": is_partial, "partial_template": partial}
    response = render(request, partial if is_partial else template, context, status=status)
    patch_vary_headers(response, ("HX-Request", "HX-Target") if target else ("HX-Request",))
    if not cache:
        add_never_cache_headers(response)
    return response


# render_page for async views: templates render in the sync thread.
arender_page = sync_to_async(render_page)
