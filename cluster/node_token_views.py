"""Settings -> Node token: rotate the bearer token the portal presents to the nodes.

URL names ``settings-node-token*`` (admins only, with a second factor when the site requires
one: accounts/policy.py and the access middleware). Views parse the form, call
cluster/node_token.py and render; the per-node table is probed on every load and refreshed
by htmx (its live region only) while the page is open.
"""

from __future__ import annotations

import base64
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST, require_safe

from cluster import node_token
from cluster.node_token import NodeTokenRefused, ProbeReport, TokenStatus
from cluster.runtime import node_client
from cluster.views import LIVE_TARGET
from elastickv_admin.lib.pages import HtmxHttpRequest, arender_page

REFRESH_S = 5
DOWNLOAD_NAME = "admin-token"  # what the download is called (a file name, not a secret)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


async def _state() -> tuple[TokenStatus, ProbeReport | None]:
    """Probe every node, then read what admins see. The table was seeded at startup, or
    by this process's token store on its first read (a process not started by `serve`):
    the page reads the same rows the node client uses."""
    await node_client().tokens.sync()
    before = await sync_to_async(node_token.token_status)()
    report = None
    if not before.insecure and before.current is not None:
        report = await node_token.probe_nodes()
    return await sync_to_async(node_token.token_status)(), report


async def _render(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    response: HttpResponse = await sync_to_async(render)(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    add_never_cache_headers(response)
    return response


async def _page(request: HtmxHttpRequest, *, status: int = 200, **extra: Any) -> HttpResponse:
    token_status, report = await _state()
    context: dict[str, Any] = {
        "status": token_status,
        "report": report,
        "rows": report.nodes if report else token_status.checks,
        "refresh_s": REFRESH_S,
        "live_target": LIVE_TARGET,
        **extra,
    }
    # The live region, and the steps card out of band (htmx swaps it by id) so it follows too.
    return await arender_page(
        request,
        "cluster/node_token/page.html",
        context,
        partial="cluster/node_token/live.html",
        target=LIVE_TARGET,
        status=status,
    )


def _back() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("settings-node-token"))


@require_safe
async def page(request: HtmxHttpRequest) -> HttpResponse:
    return await _page(request)


@sensitive_post_parameters("token")
@sensitive_variables("token", "started", "file_bytes", "context")
@require_POST
async def start(request: HtmxHttpRequest) -> HttpResponse:
    pasted = request.POST.get("mode") == "paste"
    token = request.POST.get("token", "") if pasted else None
    # The nodes known now: the only ones (with the seeds) ever sent the next token.
    known = await node_token.known_node_addresses()
    try:
        started = await sync_to_async(node_token.do_start_rotation)(
            _actor(request), token, known_addresses=known
        )
    except NodeTokenRefused as exc:
        return await _page(request, status=409, error=str(exc), paste_error=pasted)
    if started.generated is None:
        messages.success(
            request,
            f"Rotation started with the pasted token {started.fingerprint}. Install it on "
            "every node, one at a time, then finish.",
        )
        return _back()
    # The one response that shows the generated token (never cached, never shown again).
    file_bytes = (started.generated + "\n").encode("utf-8")
    context = {
        "token": started.generated,
        "fingerprint": started.fingerprint,
        "download_href": "data:application/octet-stream;base64,"
        + base64.b64encode(file_bytes).decode("ascii"),
        "download_name": DOWNLOAD_NAME,
    }
    return await _render(request, "cluster/node_token/started.html", context)


@require_POST
async def finish(request: HtmxHttpRequest) -> HttpResponse:
    expected = request.POST.get("expected_next") or None
    force = request.POST.get("force") == "1"
    confirmed = request.POST.get("confirmed") == "1"
    report = await node_token.probe_nodes()
    if force and (not confirmed or not report.not_on_next):
        if report.not_on_next or not report.rotating:
            # Name the nodes that will lose access and ask again.
            return await _confirm_force(request, report, expected)
        force = False  # every node accepts next by now: an ordinary finish
    try:
        done = await sync_to_async(node_token.do_finish_rotation)(
            _actor(request),
            report,
            force=force,
            confirm_nodes=request.POST.getlist("confirm_nodes") if force else None,
            expected_next=expected,
        )
    except NodeTokenRefused as exc:
        if force:
            return await _confirm_force(request, report, expected, error=str(exc), status=409)
        return await _page(request, status=409, error=str(exc))
    if done.forced:
        messages.warning(
            request,
            f"Rotation finished by force: {done.new_fingerprint} is the current token and "
            f"{done.old_fingerprint} is destroyed. {len(done.lost)} node(s) no longer accept "
            "the portal's token: " + ", ".join(done.lost),
        )
    else:
        messages.success(
            request,
            f"Rotation finished: {done.new_fingerprint} is the current token and "
            f"{done.old_fingerprint} is destroyed. Put the new token in --nodeTokenFile on the "
            "portal hosts too, so a fresh database would be seeded with it.",
        )
    return _back()


async def _confirm_force(
    request: HtmxHttpRequest,
    report: ProbeReport,
    expected: str | None,
    *,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    token_status = await sync_to_async(node_token.token_status)()
    context = {
        "status": token_status,
        "report": report,
        "losing": report.not_on_next,
        "expected_next": expected or (token_status.next.fingerprint if token_status.next else ""),
        "error": error,
    }
    return await _render(request, "cluster/node_token/confirm_force.html", context, status=status)


@require_POST
async def cancel(request: HtmxHttpRequest) -> HttpResponse:
    expected = request.POST.get("expected_next") or None
    try:
        cancelled = await sync_to_async(node_token.do_cancel_rotation)(
            _actor(request), expected_next=expected
        )
    except NodeTokenRefused as exc:
        return await _page(request, status=409, error=str(exc))
    messages.success(
        request,
        f"Rotation cancelled: the next token {cancelled} is destroyed. Nothing else changed.",
    )
    return _back()
