"""Admins manage users: create, roles, deactivate, reset password, force logout; each change
is one audited action."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.actions import roles_of
from accounts.models import UserSession
from audit.models import AuditEvent
from tests.conftest import PASSWORD


def found(pattern: bytes, content: bytes) -> re.Match[bytes]:
    match = re.search(pattern, content)
    assert match is not None, pattern
    return match


pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(make_user) -> Client:
    client = Client()
    client.force_login(make_user("boss", "admin"))
    return client


def signed_in_as(username: str, password: str = PASSWORD) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content
    return client


def test_admin_creates_a_user_with_roles_and_a_password_shown_once(boss):
    response = boss.post(
        "/settings/users/new/", {"username": "carol", "roles": ["viewer", "auditor"]}
    )
    assert response.status_code == 200
    password = found(rb'id="new-password">([^<]+)<', response.content).group(1).decode()
    carol = User.objects.get(username="carol")
    assert roles_of(carol) == ["auditor", "viewer"]
    assert carol.check_password(password)
    assert signed_in_as("carol", password).get("/audit/").status_code == 200
    event = AuditEvent.objects.get(action="user.created")
    assert (event.actor, event.target, event.details) == (
        "boss",
        "user:carol",
        {"roles": ["auditor", "viewer"]},
    )
    assert password not in str(event.details)


def test_a_duplicate_username_is_refused(boss, make_user):
    make_user("carol")
    response = boss.post("/settings/users/new/", {"username": "Carol"})
    assert response.status_code == 400
    assert b"already exists" in response.content


def test_assigning_roles_changes_access_at_once_and_is_audited(boss, make_user):
    carol = make_user("carol", "viewer")
    carol_client = signed_in_as("carol")
    assert carol_client.get("/audit/").status_code == 403
    boss.post(f"/settings/users/{carol.pk}/", {"step": "roles", "roles": ["auditor"]})
    assert carol_client.get("/audit/").status_code == 200
    assert carol_client.get("/nodes/").status_code == 403
    event = AuditEvent.objects.get(action="user.roles_changed")
    assert event.details == {"before": ["viewer"], "after": ["auditor"]}


def test_deactivating_a_user_ends_their_sessions_and_refuses_sign_in(boss, make_user):
    carol = make_user("carol", "viewer")
    carol_client = signed_in_as("carol")
    response = boss.post(f"/settings/users/{carol.pk}/", {"step": "deactivate"})
    assert response.status_code == 200
    assert carol_client.get("/nodes/").status_code == 302
    assert Client().post("/login/", {"username": "carol", "password": PASSWORD}).status_code == 400
    assert AuditEvent.objects.get(action="user.deactivated").details == {"sessions_ended": 1}
    boss.post(f"/settings/users/{carol.pk}/", {"step": "activate"})
    assert signed_in_as("carol").get("/nodes/").status_code == 200


def test_an_admin_cannot_deactivate_themselves(boss):
    me = User.objects.get(username="boss")
    response = boss.post(f"/settings/users/{me.pk}/", {"step": "deactivate"})
    assert response.status_code == 400
    assert User.objects.get(username="boss").is_active


def test_resetting_a_password_shows_a_new_one_once_and_ends_sessions(boss, make_user):
    carol = make_user("carol", "viewer")
    carol_client = signed_in_as("carol")
    response = boss.post(f"/settings/users/{carol.pk}/", {"step": "reset-password"})
    new = found(rb'id="new-password">([^<]+)<', response.content).group(1).decode()
    assert carol_client.get("/nodes/").status_code == 302
    assert Client().post("/login/", {"username": "carol", "password": PASSWORD}).status_code == 400
    assert signed_in_as("carol", new).get("/nodes/").status_code == 200
    assert AuditEvent.objects.filter(action="user.password_reset", target="user:carol").exists()


def test_force_logout_ends_every_session_of_the_user(boss, make_user):
    carol = make_user("carol", "viewer")
    laptop, phone = signed_in_as("carol"), signed_in_as("carol")
    assert UserSession.objects.filter(user=carol).count() == 2
    response = boss.post(f"/settings/users/{carol.pk}/", {"step": "end-sessions"})
    assert b"2 session(s) ended" in response.content
    assert laptop.get("/nodes/").status_code == 302
    assert phone.get("/nodes/").status_code == 302
    assert AuditEvent.objects.get(action="user.sessions_ended").details == {"sessions": 2}


def test_only_a_superuser_may_change_a_superuser(boss, make_user):
    root = make_user("root", superuser=True)
    response = boss.post(f"/settings/users/{root.pk}/", {"step": "deactivate"})
    assert response.status_code == 400
    assert User.objects.get(username="root").is_active


def test_site_settings_changes_are_audited_with_before_and_after(boss):
    response = boss.post(
        "/settings/site/", {"require_mfa_for_admins": "on", "audit_retention_days": "90"}
    )
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="settings.changed")
    assert event.details == {
        "audit_retention_days": {"after": 90, "before": 0},
        "require_mfa_for_admins": {"after": True, "before": False},
    }


def test_the_settings_page_lists_users_with_roles(boss, make_user):
    make_user("carol", "viewer", "auditor")
    page = boss.get("/settings/")
    assert page.status_code == 200
    assert b"carol" in page.content
    assert page["Cache-Control"].startswith("max-age=0")
