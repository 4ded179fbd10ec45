"""The client's address and scheme, the one way: the TCP peer, or the X-Forwarded-For entry
ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS from the right when trusted reverse proxies are in front.

Each proxy appends the address it received the request from, so with N trusted proxies the
N-th entry from the right was written by our outermost proxy; anything further left came
from the client and is not believed. django-axes uses this function too
(AXES_CLIENT_IP_CALLABLE), so the lockout and the audit log agree on who asked. daphne's own
--proxy-headers (leftmost entry) is never used: the ASGI scope keeps the TCP peer.

X-Forwarded-Proto follows the same rule (TrustedProxyMiddleware): ignored at 0 hops, else the
entry N from the right, or the leftmost when the proxies overwrite rather than append (fewer
entries than proxies: all of them then came from a trusted proxy).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from elastickv_admin.lib.middleware import HybridMiddleware


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        return None


def _entries(meta: dict[str, Any], key: str) -> list[str]:
    return [p.strip() for p in str(meta.get(key, "")).split(",") if p.strip()]


def client_ip_from_meta(meta: dict[str, Any], hops: int) -> str:
    peer = _valid(str(meta.get("REMOTE_ADDR", ""))) or ""
    if hops <= 0:
        return peer
    forwarded = _entries(meta, "HTTP_X_FORWARDED_FOR")
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


def forwarded_proto_from_meta(meta: dict[str, Any], hops: int) -> str | None:
    """The scheme the outermost trusted proxy saw, or None (use the connection's own)."""
    if hops <= 0:
        return None
    protos = [p.lower() for p in _entries(meta, "HTTP_X_FORWARDED_PROTO")]
    if not protos:
        return None
    proto = protos[-min(hops, len(protos))]
    return proto if proto in ("http", "https") else None


def trust_forwarded_proto(meta: dict[str, Any]) -> None:
    """Leave in X-Forwarded-Proto only the one trusted value (or none), which Django reads
    through SECURE_PROXY_SSL_HEADER (its own parsing takes the leftmost). HTTP requests
    (TrustedProxyMiddleware) and WebSocket handshakes (accounts/ws.py) both go through here."""
    hops: int = getattr(settings, "TRUSTED_PROXY_HOPS", 0)
    proto = forwarded_proto_from_meta(meta, hops)
    if proto is None:
        meta.pop("HTTP_X_FORWARDED_PROTO", None)
    else:
        meta["HTTP_X_FORWARDED_PROTO"] = proto


class TrustedProxyMiddleware(HybridMiddleware):
    """First in MIDDLEWARE: the trusted X-Forwarded-Proto only (trust_forwarded_proto)."""

    def _trust(self, request: HttpRequest) -> None:
        trust_forwarded_proto(request.META)

    def handle(self, request: HttpRequest) -> Any:
        self._trust(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        self._trust(request)
        return await self.get_response(request)  # type: ignore[misc]
