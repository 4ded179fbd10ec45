"""Template context shared by every page: the navigation (only what the user may open, as
accounts/policy.py decides) and the user menu."""

from __future__ import annotations

from typing import NamedTuple

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from accounts.policy import NAVIGATION, Target, decide
from accounts.roles import ROLES


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
    items = []
    for label, name in NAVIGATION:
        if not decide(grants, Target.page(name)).allowed:
            continue
        try:
            url = reverse(name)
        except NoReverseMatch:
            continue
        # A detail page (/nodes/n1/) lights up its section (/nodes/).
        active = request.path == url or (url != "/" and request.path.startswith(url))
        items.append(NavItem(label, url, active))
    roles = [role for role, (perm, _) in ROLES.items() if perm in permissions]
    return {"nav_items": items, "user_roles": roles, "signed_in": authenticated}
