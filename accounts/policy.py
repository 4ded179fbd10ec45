"""THE access policy: which permission each URL name needs. One table, read by the access
middleware (pages and /api/*) and by the WebSocket middleware (WEBSOCKET_POLICY).

Keys are URL names (``namespace:name``), exact or shell-style patterns; the most specific
match wins (exact, then the longest pattern). A URL name that matches nothing is DENIED to
everyone, superusers included, so a new page cannot ship unprotected: add it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from accounts.roles import MANAGE_PORTAL, VIEW_AUDIT, VIEW_DASHBOARDS


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
