"""Template context shared by every page: the navigation (only what the user may open),
the user menu and the chosen theme."""

from __future__ import annotations

from typing import NamedTuple

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from accounts.policy import AUTHENTICATED, PUBLIC, access_for
from accounts.roles import ROLES

# The sidebar's theme toggle (static/js/theme.js) remembers the choice here; without it the
# stylesheet follows the browser's prefers-color-scheme.
THEME_COOKIE = "ekv_theme"
THEMES = frozenset({"light", "dark"})


def chosen_theme(request: HttpRequest) -> str:
    """The theme the user chose: light, dark, or "" to follow the browser. The cookie is
    the browser's to set: any other value is ignored, never written into the page."""
    value = request.COOKIES.get(THEME_COOKIE, "")
    return value if value in THEMES else ""


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
    ("Hot ranges", "keyviz:hot-ranges"),
    ("Events", "keyviz:events"),
    ("Audit log", "audit"),
    ("Settings", "settings"),
    ("Demo cluster", "demo:card"),  # only while the demo runs (its URL exists then)
)


def _may_open(name: str, permissions: frozenset[str], authenticated: bool) -> bool:
    # The same policy table the access middleware enforces (accounts/policy.py).
    access = access_for(name)
    if access is None:
        return False
    if access is PUBLIC:
        return True
    return authenticated and (access is AUTHENTICATED or access.permission in permissions)


def portal(request: HttpRequest) -> dict[str, object]:
    # Set by accounts.middleware.AccessMiddleware; no database query here.
    permissions: frozenset[str] = getattr(request, "portal_permissions", frozenset())
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    links = []
    for label, name in NAVIGATION:
        if not _may_open(name, permissions, authenticated):
            continue
        try:
            links.append((label, reverse(name)))
        except NoReverseMatch:
            continue
    # A detail page (/nodes/n1/) lights up its section (/nodes/); only the longest match
    # does (/keyviz/hot/ is Hot ranges, not also Key Visualizer at /keyviz/).
    matching = [
        url
        for _, url in links
        if request.path == url or (url != "/" and request.path.startswith(url))
    ]
    current = max(matching, key=len, default=None)
    items = [NavItem(label, url, url == current) for label, url in links]
    roles = [role for role, (perm, _) in ROLES.items() if perm in permissions]
    return {
        "nav_items": items,
        "user_roles": roles,
        "signed_in": authenticated,
        "theme": chosen_theme(request),
        "theme_cookie": THEME_COOKIE,
    }
