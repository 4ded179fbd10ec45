"""X-Forwarded-Proto is believed only as far as ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS reaches,
by the same rule as X-Forwarded-For (elastickv_admin/lib/net.py)."""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from elastickv_admin.lib.net import TrustedProxyMiddleware, forwarded_proto_from_meta


@pytest.mark.parametrize(
    ("proto", "hops", "expected"),
    [
        ("https", 0, None),  # no proxies: the caller's header is ignored
        ("https", 1, "https"),
        ("https, http", 1, "http"),  # forged first entry, the proxy appended what it saw
        ("https, http", 2, "https"),
        ("https", 2, "https"),  # proxies that overwrite: the one entry a proxy wrote
        ("gopher", 1, None),
        ("", 1, None),
    ],
)
def test_forwarded_proto_follows_the_trusted_hops_rule(proto, hops, expected):
    assert forwarded_proto_from_meta({"HTTP_X_FORWARDED_PROTO": proto}, hops) == expected


@pytest.mark.parametrize(
    ("hops", "proto", "secure"),
    [(0, "https", False), (1, "https, http", False), (1, "http, https", True)],
)
def test_a_forged_leading_forwarded_proto_does_not_make_the_request_secure(hops, proto, secure):
    request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO=proto)
    seen: list[bool] = []

    def view(req: HttpRequest) -> HttpResponse:
        seen.append(req.is_secure())
        return HttpResponse()

    with override_settings(
        TRUSTED_PROXY_HOPS=hops, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")
    ):
        TrustedProxyMiddleware(view)(request)
    assert seen == [secure]
