"""One page helper (elastickv_admin/lib/pages.py render_page): every page htmx refreshes answers
the whole page without HX-Request and only its live region with it, and says so in Vary so
no cache hands one for the other."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory, override_settings
from django_htmx.middleware import HtmxDetails

from elastickv_admin.lib.config import PortalConfig
from elastickv_admin.lib.pages import HtmxHttpRequest, render_page, wants_partial
from tests.unit.access.test_node_token_pages import token_config  # noqa: F401 (fixture)

NO_NODES = PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True, rpc_timeout_s=0.5)
LIVE = {"HX-Request": "true", "HX-Target": "live"}
CLUSTER_PAGES = ["/", "/nodes/", "/nodes/n1/", "/raft/", "/routes/?group=1", "/adapters/"]


def vary(response) -> set[str]:
    return {v.strip() for v in response["Vary"].split(",")}


def assert_full_and_partial(client: Client, url: str) -> None:
    full = client.get(url)
    live = client.get(url, headers=LIVE)
    assert full.status_code == live.status_code
    assert full.content.decode().startswith("<!doctype html>")
    body = live.content.decode().strip()
    assert body.startswith('<div id="live"')
    assert "<html" not in body
    # The whole page holds the same live region the htmx answer brings.
    assert '<div id="live"' in full.content.decode()
    for response in (full, live):
        assert {"HX-Request", "HX-Target"} <= vary(response)
        assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", CLUSTER_PAGES)
@override_settings(ELASTICKV_ADMIN=NO_NODES)
def test_each_cluster_page_answers_the_page_or_its_live_region_varying_on_htmx(url, make_user):
    client = Client()
    client.force_login(make_user("pages-viewer", "viewer"))
    assert_full_and_partial(client, url)


@pytest.mark.django_db(transaction=True)
def test_the_node_token_page_answers_the_page_or_its_live_region_varying_on_htmx(
    make_user,
    token_config,  # noqa: F811
):
    client = Client()
    client.force_login(make_user("pages-admin", "admin"))
    assert_full_and_partial(client, "/settings/node-token/")


def htmx_request(**headers: str) -> HtmxHttpRequest:
    request = RequestFactory().get("/", headers=headers)
    request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
    return request  # type: ignore[return-value]


def test_an_htmx_request_for_another_target_gets_the_whole_page():
    assert wants_partial(htmx_request(**LIVE), "live")
    assert not wants_partial(htmx_request(**{"HX-Request": "true", "HX-Target": "x"}), "live")
    assert not wants_partial(htmx_request(), "live")
    # Without a target, any htmx request is answered with the partial.
    assert wants_partial(htmx_request(**{"HX-Request": "true"}))


def test_without_a_target_the_answer_varies_on_hx_request_only():
    response = render_page(
        htmx_request(**{"HX-Request": "true"}),
        "cluster/partials/actions.html",
        {"api_url": "/whole"},
        partial="cluster/partials/actions.html",
    )
    assert vary(response) == {"HX-Request"}
