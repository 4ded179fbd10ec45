"""One access decision (accounts/policy.py decide) for pages, the WebSocket, the navigation
and the sign-in landing: the rules as a table, and proof that the four callers ask it rather
than restating a rule (a change in the rule table changes all of them)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from accounts import policy
from accounts.actions import do_update_site_settings
from accounts.policy import Target, Verdict, decide
from accounts.roles import VIEW_AUDIT, VIEW_DASHBOARDS
from audit.models import AuditEvent
from elastickv_admin.asgi import application
from tests.conftest import PASSWORD
from tests.unit.access.test_ws_access import HOST, ORIGIN, session_cookie

A, U, S, F, M = (
    Verdict.ALLOW,
    Verdict.UNMAPPED,
    Verdict.SIGN_IN,
    Verdict.FORBIDDEN,
    Verdict.SECOND_FACTOR,
)
PAGE, STREAM = Target.page, Target.stream
PERSONAS = ("anonymous", "viewer", "auditor", "admin", "superuser")

# target -> expected verdict per persona (PERSONAS order), stated independently of POLICY.
RULES: list[tuple[Target, tuple[Verdict, ...]]] = [
    (PAGE("healthz"), (A, A, A, A, A)),
    (PAGE("accounts:login"), (A, A, A, A, A)),
    (PAGE("accounts:tokens"), (S, A, A, A, A)),
    (PAGE("accounts:mfa"), (S, A, A, A, A)),
    (PAGE("metrics"), (S, A, F, F, A)),
    (PAGE("cluster:overview"), (S, A, F, F, A)),
    (PAGE("cluster:api-nodes"), (S, A, F, F, A)),
    (PAGE("keyviz:heatmap"), (S, A, F, F, A)),
    (PAGE("audit"), (S, F, A, F, A)),
    (PAGE("audit-export"), (S, F, A, F, A)),
    (PAGE("settings"), (S, F, F, A, A)),
    (PAGE("settings-node-token-start"), (S, F, F, A, A)),
    (PAGE("demo:card"), (S, F, F, A, A)),
    (PAGE("forgotten-page"), (U, U, U, U, U)),
    (STREAM("/api/stream"), (S, A, F, F, A)),
    (STREAM("/api/elsewhere"), (U, U, U, U, U)),
]


@pytest.fixture
def personas(make_user: Any) -> dict[str, Any]:
    return {
        "anonymous": AnonymousUser(),
        "viewer": make_user("d-viewer", "viewer"),
        "auditor": make_user("d-auditor", "auditor"),
        "admin": make_user("d-admin", "admin"),
        "superuser": make_user("d-root", superuser=True),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("target", "expected"), RULES, ids=[t.name for t, _ in RULES])
def test_each_role_gets_the_verdict_the_rule_table_states(personas, target, expected):
    got = tuple(decide(personas[p], target).verdict for p in PERSONAS)
    assert got == expected


@pytest.mark.django_db
def test_an_admin_owing_a_second_factor_opens_only_the_exempt_pages(personas):
    do_update_site_settings("system", require_mfa_for_admins=True)
    admin = personas["admin"]
    assert decide(admin, PAGE("settings"), second_factor_owed=True).verdict is M
    assert decide(admin, PAGE("accounts:mfa"), second_factor_owed=True).verdict is A
    assert decide(admin, PAGE("accounts:logout"), second_factor_owed=True).verdict is A
    assert decide(admin, PAGE("settings"), second_factor_owed=False).verdict is A
    # Only admins owe one; a viewer's session is not held up.
    assert decide(personas["viewer"], PAGE("cluster:overview"), second_factor_owed=True) == (
        decide(personas["viewer"], PAGE("cluster:overview"))
    )


def test_a_refusal_names_the_role_that_would_open_the_page():
    decision = decide(AnonymousUser(), PAGE("settings"))
    assert decision.message.startswith("authentication required")

    class Viewer:
        is_authenticated = True

        def has_perm(self, perm: str) -> bool:
            return perm == VIEW_DASHBOARDS

    refused = decide(Viewer(), PAGE("settings"))
    assert refused.message == "this page needs the admin role (accounts.manage_portal)"
    assert refused.required == "accounts.manage_portal"


@pytest.fixture
def dashboards_for_auditors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule table turned around: dashboards and the stream need the auditor role, the
    audit log the viewer role. Only the table changes; no caller is touched."""
    monkeypatch.setitem(policy.POLICY, "cluster:*", policy.perm(VIEW_AUDIT))
    monkeypatch.setitem(policy.POLICY, "keyviz:*", policy.perm(VIEW_AUDIT))
    monkeypatch.setitem(policy.POLICY, "audit", policy.perm(VIEW_DASHBOARDS))
    monkeypatch.setitem(policy.POLICY, "audit-*", policy.perm(VIEW_DASHBOARDS))
    monkeypatch.setitem(policy.WEBSOCKET_POLICY, "/api/stream", policy.perm(VIEW_AUDIT))


def nav_labels(client: Client, path: str) -> list[str]:
    response = client.get(path)
    return [item.label for item in response.context["nav_items"]]


@pytest.mark.django_db
def test_a_rule_change_moves_the_middleware_the_navigation_and_the_landing(
    make_user, dashboards_for_auditors
):
    viewer = Client()
    viewer.force_login(make_user("r-viewer", "viewer"))
    # The middleware: the viewer now opens the audit log and is refused the dashboards.
    assert viewer.get("/audit/").status_code == 200
    assert viewer.get("/nodes/").status_code == 403
    # The navigation shows what the table now allows, nothing else.
    assert nav_labels(viewer, "/audit/") == ["Audit log"]
    # The landing after sign-in follows: the viewer lands on the audit log.
    make_user("r-viewer2", "viewer")
    response = Client().post("/login/", {"username": "r-viewer2", "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, "/audit/")
    auditor = Client()
    auditor.force_login(make_user("r-auditor", "auditor"))
    assert auditor.get("/audit/").status_code == 403
    assert nav_labels(auditor, "/account/tokens/")[:2] == ["Overview", "Nodes"]
    assert "Audit log" not in nav_labels(auditor, "/account/tokens/")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(30)
async def test_a_rule_change_moves_the_websocket_handshake(make_user, dashboards_for_auditors):
    user = await sync_to_async(make_user)("w-viewer", "viewer")
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application, "/api/stream", headers=[HOST, ORIGIN, (b"cookie", cookie)]
    )
    connected, code = await communicator.connect(timeout=5)
    assert (connected, code) == (False, 4403)
    # Refused by the access middleware under the changed rule (not by the consumer).
    event = await AuditEvent.objects.aget(action="permission.denied")
    assert event.details["required"] == VIEW_AUDIT
