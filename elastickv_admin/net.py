"""The client's address, the one way: the TCP peer, or the X-Forwarded-For entry
ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS from the right when trusted reverse proxies are in front.

Each proxy appends the address it received the request from, so with N trusted proxies the
N-th entry from the right was written by our outermost proxy; anything further left came
from the client and is not believed. django-axes uses this function too
(AXES_CLIENT_IP_CALLABLE), so the lockout and the audit log agree on who asked.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        return None


def client_ip_from_meta(meta: dict[str, Any], hops: int) -> str:
    peer = _valid(str(meta.get("REMOTE_ADDR", ""))) or ""
    if hops <= 0:
        return peer
    forwarded = [p.strip() for p in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    forwarded = [p for p in forwarded if p]
    if len(forwarded) < hops:
        # Fewer entries than proxies: the request did not come through all of them.
        return peer
    return _valid(forwarded[-hops]) or peer


def client_ip(request: Any) -> str:
    hops: int = getattr(settings, "TRUSTED_PROXY_HOPS", 0)
    return client_ip_from_meta(getattr(request, "META", {}), hops)


def client_ip_from_scope(scope: dict[str, Any]) -> str:
    """The same rule for an ASGI scope (WebSocket handshakes)."""
    meta: dict[str, Any] = {}
    client = scope.get("client")
    if client:
        meta["REMOTE_ADDR"] = client[0]
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            meta["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
    return client_ip(type("_Scope", (), {"META": meta})())
