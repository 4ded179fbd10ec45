"""The Demo cluster card: the demo's failure controls for admins (POST + CSRF, audited)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from demo import runtime
from demo.commands import COMMANDS
from demo.control import ControlError

NODE_COMMANDS = tuple(COMMANDS)


@require_safe
def card(request: HttpRequest) -> HttpResponse:
    running = runtime.controls()
    nodes = []
    if running is not None:
        for node in running.cluster.nodes:
            nodes.append(
                {
                    "info": node,
                    "state": running.state(node.node_id),
                    "phase": running.cluster.flush_phase(node.node_id),
                }
            )
    context = {
        "running": running is not None,
        "nodes": nodes,
        "step_ms": running.cluster.step_ms if running else 0,
        "commands": COMMANDS,
    }
    return render(request, "demo/card.html", context)


@require_POST
def control(request: HttpRequest) -> HttpResponse:
    command = request.POST.get("command", "")
    node = request.POST.get("node", "")
    value = request.POST.get("value", "").strip()
    if command not in NODE_COMMANDS:
        messages.error(request, f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        return redirect("demo:card", permanent=False)
    args = [command, node, *([value] if value else [])]
    try:
        done = runtime.run_audited(args, actor=request.user.get_username(), via="portal")
    except ControlError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("demo:card")
