"""THE access policy: which permission each URL name (and WebSocket path) needs, which pages
a pending second factor still opens, the navigation order a user lands by, and the one
function that decides: ``decide(user, target) -> Decision``. The access middleware (pages
and /api/*), the WebSocket middleware, the navigation and the sign-in landing all ask it,
so none of them restates a rule (AWX shares one access layer between views and consumers).

Keys are URL names (``namespace:name``), exact or shell-style patterns; the most specific
match wins (exact, then the longest pattern). A URL name that matches nothing is DENIED to
everyone, superusers included, so a new page cannot ship unprotected: add it here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from django.contrib.auth.models import User

from accounts.actions import mfa_required
from accounts.roles import MANAGE_PORTAL, VIEW_AUDIT, VIEW_DASHBOARDS, role_for


@dataclass(frozen=True)
class Access:
    """public: anyone; authenticated: any logged-in user; else the named permission."""

    kind: str
    permission: str = ""

    def __str__(self) -> str:
        return self.permission or self.kind


PUBLIC = Access("public")
AUTHENTICATED = Access("authenticated")


def perm(name: str) -> Access:
    return Access("permission", name)


POLICY: dict[str, Access] = {
    # Probes for load balancers and orchestrators (they carry no secrets).
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    # Prometheus scrapes with an API token (`authorization` in its scrape config).
    "metrics": perm(VIEW_DASHBOARDS),
    # Signing in and out.
    "accounts:login": PUBLIC,
    "accounts:login-mfa": PUBLIC,  # only meaningful with a pending password login
    "accounts:logout": PUBLIC,
    # Every signed-in user's own things.
    "accounts:tokens": AUTHENTICATED,
    "accounts:token-revoke": AUTHENTICATED,
    "accounts:mfa": AUTHENTICATED,
    # Viewer: dashboards and API reads.
    "cluster:*": perm(VIEW_DASHBOARDS),
    "keyviz:*": perm(VIEW_DASHBOARDS),
    # Auditor: the audit log.
    "audit": perm(VIEW_AUDIT),
    "audit-*": perm(VIEW_AUDIT),
    # Admin: users, roles, settings, the node token and its rotation.
    "settings": perm(MANAGE_PORTAL),
    "settings-*": perm(MANAGE_PORTAL),
    "settings-node-token*": perm(MANAGE_PORTAL),
    # The demo's failure controls (URLs exist only under `elastickv-admin demo`).
    "demo:*": perm(MANAGE_PORTAL),
}

# WebSocket routes are not in the URLconf: keyed by path.
WEBSOCKET_POLICY: dict[str, Access] = {
    "/api/stream": perm(VIEW_DASHBOARDS),
}


def access_for(url_name: str) -> Access | None:
    """The rule for a URL name, or None when nothing in POLICY covers it (deny)."""
    if url_name in POLICY:
        return POLICY[url_name]
    matches = [p for p in POLICY if any(c in p for c in "*?[") and fnmatchcase(url_name, p)]
    if not matches:
        return None
    return POLICY[max(matches, key=len)]


# Pages a signed-in admin who must enrol a second factor can still open.
MFA_EXEMPT = frozenset({"accounts:mfa", "accounts:logout", "accounts:login", "accounts:login-mfa"})

# The navigation, in order (label, URL name). A user lands on the first entry they may open
# (an auditor on the audit log, not on a dashboard they would be refused).
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


class Subject(Protocol):
    """Who asks: a user (a User or AnonymousUser), or the navigation's view of one."""

    @property
    def is_authenticated(self) -> bool: ...

    def has_perm(self, perm: str) -> bool: ...


@dataclass(frozen=True)
class Target:
    """What is opened: a URL name (pages and /api/*) or a WebSocket path."""

    name: str
    websocket: bool = False

    @classmethod
    def page(cls, url_name: str) -> Target:
        return cls(url_name)

    @classmethod
    def stream(cls, path: str) -> Target:
        return cls(path, websocket=True)


class Verdict(enum.Enum):
    ALLOW = "allow"
    UNMAPPED = "unmapped"  # no rule covers the target: denied to everyone
    SIGN_IN = "sign-in"  # anonymous on a page that needs a principal
    SECOND_FACTOR = "second-factor"  # a session that still owes its second factor
    FORBIDDEN = "forbidden"  # signed in, without the permission


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    access: Access | None
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def required(self) -> str:
        return str(self.access) if self.access is not None else "unmapped"


def rule_for(target: Target) -> Access | None:
    if target.websocket:
        return WEBSOCKET_POLICY.get(target.name)
    return access_for(target.name)


def decide(user: Subject, target: Target, *, second_factor_owed: bool = False) -> Decision:
    """Whether `user` may open `target`. `second_factor_owed`: a session sign-in whose second
    factor is not verified yet (the caller knows the session; an API token never owes one);
    it refuses everything but MFA_EXEMPT when the site requires a second factor of this user.
    Database: at most the site settings, and only when a second factor is owed."""
    access = rule_for(target)
    if access is None:
        return Decision(Verdict.UNMAPPED, None, "this page is not available")
    if access is PUBLIC:
        return Decision(Verdict.ALLOW, access)
    if not user.is_authenticated:
        return Decision(
            Verdict.SIGN_IN, access, "authentication required: sign in or send a Bearer token"
        )
    if second_factor_owed and target.name not in MFA_EXEMPT and _must_enrol(user):
        return Decision(
            Verdict.SECOND_FACTOR, access, "a second factor is required: enrol at /account/mfa/"
        )
    if access is AUTHENTICATED or user.has_perm(access.permission):
        return Decision(Verdict.ALLOW, access)
    return Decision(
        Verdict.FORBIDDEN,
        access,
        f"this page needs the {role_for(access.permission)} role ({access.permission})",
    )


def _must_enrol(user: Subject) -> bool:
    return isinstance(user, User) and mfa_required(user)


def landing(user: Subject) -> str | None:
    """The URL name of the first navigation page `user` may open, or None."""
    for _, name in NAVIGATION:
        if decide(user, Target.page(name)).allowed:
            return name
    return None
