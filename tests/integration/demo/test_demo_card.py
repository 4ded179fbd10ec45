"""The Demo cluster card: admins only, POST with CSRF, each change audited with its
actor; present only with the demo setting, and with it the banner on every page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings
from django.urls import Resolver404, resolve

from audit.models import AuditEvent
from demo import runtime
from demo.control import DemoControls
from tests.unit.access.test_access_matrix import (
    PERSONAS,
)
from tests.unit.access.test_access_matrix import (
    test_every_url_answers_each_role_as_the_policy_says as access_matrix,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DEMO_ON = override_settings(
    DEMO=True,
    ROOT_URLCONF="tests.demo_urls",
    DEMO_PROFILE="upstream",
    DEMO_HISTORY_BEFORE_MS=1_796_000_000_000,
)
BANNER = "Demo: synthetic history before 2026-11-30 00:53:20 UTC; profile upstream"


@pytest.fixture
def demo_cluster(devcluster_factory) -> Iterator[DemoControls]:
    controls = DemoControls(devcluster_factory(timers=False, step_ms=2_000))
    runtime.install(controls)
    yield controls
    runtime.install(None)


@pytest.fixture
def admin_client(admin_user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    return client


def csrf_token(client: Client) -> str:
    page = client.get("/demo/")
    assert page.status_code == 200
    return str(page.context["csrf_token"])


def test_serve_has_no_demo_routes_and_no_banner(admin_client):
    with pytest.raises(Resolver404):
        resolve("/demo/")
    assert admin_client.get("/demo/").status_code == 404
    page = admin_client.get("/settings/").content.decode()
    assert "Demo:" not in page
    assert "Demo cluster" not in page
    assert "Demo:" not in Client().get("/login/").content.decode()


@DEMO_ON
def test_demo_banner_on_every_page_names_history_and_profile(admin_client):
    for path in ("/", "/settings/", "/keyviz/", "/demo/"):
        assert BANNER in admin_client.get(path).content.decode(), path
    assert BANNER in Client().get("/login/").content.decode()


@DEMO_ON
@override_settings(DEMO_HISTORY_BEFORE_MS=0)
def test_demo_banner_without_history_says_so(admin_client):
    page = admin_client.get("/").content.decode()
    assert "Demo: no synthetic history; profile upstream" in page


@DEMO_ON
def test_card_stops_a_node_with_csrf_and_audits_the_admin(admin_client, admin_user, demo_cluster):
    token = csrf_token(admin_client)
    response = admin_client.post(
        "/demo/control", {"command": "stop", "node": "n2", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert not demo_cluster.cluster.node("n2").up
    page = admin_client.get("/demo/").content.decode()
    assert "n2 stopped" in page
    event = AuditEvent.objects.get(action="demo.control")
    assert event.actor == admin_user.username
    assert event.target == "node:n2"
    assert event.details == {"command": "stop n2", "via": "portal"}


@DEMO_ON
def test_card_post_without_csrf_is_refused_and_changes_nothing(admin_client, demo_cluster):
    response = admin_client.post("/demo/control", {"command": "stop", "node": "n1"})
    assert response.status_code == 403
    assert demo_cluster.cluster.node("n1").up
    assert not AuditEvent.objects.filter(action="demo.control").exists()


@DEMO_ON
@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"command": "reboot", "node": "n1"}, "unknown command &#x27;reboot&#x27;"),
        ({"command": "stop", "node": "n9"}, "no node &#x27;n9&#x27;; nodes are n1, n2, n3"),
        ({"command": "phase", "node": "n1", "value": "later"}, "MS must be a number"),
    ],
)
def test_card_bad_input_says_what_to_fix(admin_client, demo_cluster, form, says):
    token = csrf_token(admin_client)
    response = admin_client.post("/demo/control", {**form, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert says in admin_client.get("/demo/").content.decode()
    assert all(n.up for n in demo_cluster.cluster.nodes)


@DEMO_ON
def test_card_is_refused_to_viewers(make_user, demo_cluster):
    client = Client()
    client.force_login(make_user("just-a-viewer", "viewer"))
    assert client.get("/demo/").status_code == 403
    assert client.post("/demo/control", {"command": "stop", "node": "n1"}).status_code == 403
    assert demo_cluster.cluster.node("n1").up


@DEMO_ON
@pytest.mark.parametrize("persona", list(PERSONAS))
def test_demo_urls_answer_each_role_as_the_policy_says(persona, make_user):
    access_matrix(persona, make_user)
