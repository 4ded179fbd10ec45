"""Template context shared by every page: the navigation (only what the user may open, as
accounts/policy.py decides), the user menu and the chosen theme."""

from __future__ import annotations

from typing import NamedTuple

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from accounts.policy import NAVIGATION, Target, decide
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


class _Grants(NamedTuple):
    """The user as the access middleware loaded them (no database query here)."""

    is_authenticated: bool
    permissions: frozenset[str]

    def has_perm(self, perm: str) -> bool:
        return perm in self.permissions


def portal(request: HttpRequest) -> dict[str, object]:
    # Set by accounts.middleware.AccessMiddleware; no database query here.
    permissions: frozenset[str] = getattr(request, "portal_permissions", frozenset())
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    grants = _Grants(authenticated, permissions)
    links = []
    for label, name in NAVIGATION:
        if not decide(grants, Target.page(name)).allowed:
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
