"""Template context shared by every page: the navigation."""

from __future__ import annotations

from typing import NamedTuple

from django.http import HttpRequest
from django.urls import reverse


class NavItem(NamedTuple):
    label: str
    url: str
    active: bool


NAVIGATION = (
    ("Overview", "cluster:overview"),
    ("Nodes", "cluster:nodes"),
    ("Raft groups", "cluster:raft"),
    ("Routes", "cluster:routes"),
    ("Adapters", "cluster:adapters"),
    ("Key Visualizer", "keyviz:heatmap"),
    ("Audit log", "audit"),
    ("Settings", "settings"),
)


def portal(request: HttpRequest) -> dict[str, object]:
    items = []
    for label, name in NAVIGATION:
        url = reverse(name)
        # A detail page (/nodes/n1/) lights up its section (/nodes/).
        active = request.path == url or (url != "/" and request.path.startswith(url))
        items.append(NavItem(label, url, active))
    return {"nav_items": items}
