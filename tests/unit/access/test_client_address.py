"""The client address comes from the TCP peer, or from X-Forwarded-For only as far as the
configured number of trusted proxies reaches."""

from __future__ import annotations

import pytest

from elastickv_admin.lib.net import client_ip_from_meta


@pytest.mark.parametrize(
    ("meta", "hops", "expected"),
    [
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, 0, "10.0.0.1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, 1, "1.2.3.4"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.2.3.4"}, 1, "1.2.3.4"),
        (
            {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.2.3.4, 10.0.0.1"},
            2,
            "1.2.3.4",
        ),
        # Fewer entries than trusted proxies: not believed.
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, 2, "10.0.0.1"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "not-an-ip"}, 1, "10.0.0.1"),
        ({"REMOTE_ADDR": "::1"}, 0, "::1"),
    ],
)
def test_client_address_honours_only_trusted_proxy_hops(meta, hops, expected):
    assert client_ip_from_meta(meta, hops) == expected
