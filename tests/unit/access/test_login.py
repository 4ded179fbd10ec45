"""Sign in and out: sessions, CSRF, the lockout by username and source address on both the
sync and the async login path, client addresses only from trusted proxy hops."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import aauthenticate, authenticate
from django.test import AsyncClient, Client, RequestFactory, override_settings

from audit.models import AuditEvent
from tests.conftest import PASSWORD

LIMIT = settings.AXES_FAILURE_LIMIT


def login(client: Client, username: str, password: str, **extra):
    return client.post("/login/", {"username": username, "password": password}, **extra)


def fail_until_locked(client: Client, username: str, **extra) -> None:
    for _ in range(LIMIT):
        login(client, username, "wrong-password", **extra)


@pytest.mark.django_db
def test_login_with_the_right_password_opens_the_dashboard_and_is_audited(make_user):
    make_user("alice", "viewer")
    client = Client()
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200  # the overview itself, not a refusal
    event = AuditEvent.objects.get(action="login")
    assert (event.actor, event.target, event.outcome) == ("alice", "user:alice", "success")
    assert event.request_id == response["X-Request-ID"]


@pytest.mark.django_db
def test_login_returns_to_next_but_never_to_another_site(make_user):
    make_user("alice", "viewer")
    ok = Client().post("/login/", {"username": "alice", "password": PASSWORD, "next": "/nodes/"})
    assert ok["Location"] == "/nodes/"
    evil = Client().post(
        "/login/", {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert evil["Location"] == "/"


@pytest.mark.django_db
def test_failed_login_is_refused_and_audited_without_the_password(make_user):
    make_user("alice", "viewer")
    response = login(Client(), "alice", "not-my-password")
    assert response.status_code == 400
    event = AuditEvent.objects.get(action="login.failed")
    assert event.outcome == "failure"
    assert event.details["username"] == "alice"
    assert "not-my-password" not in str(event.details)


@pytest.mark.django_db
def test_logout_is_a_post_that_ends_the_session_and_is_audited(make_user):
    make_user("alice", "viewer")
    client = Client()
    login(client, "alice", PASSWORD)
    assert client.get("/logout/").status_code == 200  # a confirmation page, nothing ended
    assert client.get("/nodes/").status_code == 200
    response = client.post("/logout/")
    assert response["Location"] == "/login/"
    assert client.get("/nodes/").status_code == 302
    assert AuditEvent.objects.filter(action="logout", actor="alice").count() == 1


@pytest.mark.django_db
def test_every_form_needs_the_csrf_token(make_user):
    make_user("alice", "viewer")
    client = Client(enforce_csrf_checks=True)
    assert login(client, "alice", PASSWORD).status_code == 403
    page = client.get("/login/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        "/login/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    # Signed in, a form without the token (here: create an API token) is refused too.
    assert client.post("/account/tokens/", {"name": "x"}).status_code == 403


def test_session_and_csrf_cookies_are_secure_http_only_and_expire():
    assert settings.SESSION_COOKIE_SECURE is True
    assert settings.CSRF_COOKIE_SECURE is True
    assert settings.SESSION_COOKIE_HTTPONLY is True
    assert settings.SESSION_COOKIE_SAMESITE == "Lax"
    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is True


@pytest.mark.django_db
def test_session_cookie_sent_at_login_is_secure_and_http_only(make_user):
    make_user("alice", "viewer")
    response = login(Client(), "alice", PASSWORD)
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True


@pytest.mark.django_db
def test_lockout_after_failures_refuses_even_the_right_password_on_the_sync_path(make_user):
    make_user("alice", "viewer")
    client = Client()
    fail_until_locked(client, "alice")
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert client.get("/nodes/").status_code == 302  # not signed in
    assert AuditEvent.objects.filter(action="login.lockout").exists()
    # The lower-level sync path refuses too.
    request = RequestFactory().post("/login/")
    assert authenticate(request, username="alice", password=PASSWORD) is None


@pytest.mark.django_db(transaction=True)
async def test_lockout_refuses_the_right_password_on_the_async_path(make_user):
    await sync_to_async(make_user)("alice", "viewer")
    client = AsyncClient()
    for _ in range(LIMIT):
        await client.post("/login/", {"username": "alice", "password": "wrong"})
    response = await client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert (await client.get("/nodes/")).status_code == 302
    # aauthenticate() goes through the lockout backend's aauthenticate, not around it.
    request = RequestFactory().post("/login/")
    assert await aauthenticate(request, username="alice", password=PASSWORD) is None


@pytest.mark.django_db(transaction=True)
async def test_failures_on_the_async_path_lock_out_the_sync_path(make_user):
    await sync_to_async(make_user)("alice", "viewer")
    request = RequestFactory().post("/login/")
    for _ in range(LIMIT):
        assert await aauthenticate(request, username="alice", password="wrong") is None
    assert await sync_to_async(authenticate)(request, username="alice", password=PASSWORD) is None


@pytest.mark.django_db
def test_lockout_is_per_username_and_source_address(make_user):
    make_user("alice", "viewer")
    make_user("bob", "viewer")
    client = Client()
    fail_until_locked(client, "alice", REMOTE_ADDR="10.0.0.5")
    assert login(client, "alice", PASSWORD, REMOTE_ADDR="10.0.0.5").status_code == 429
    # Same user from another address, another user from the same address: not locked.
    assert login(Client(), "alice", PASSWORD, REMOTE_ADDR="10.0.0.6").status_code == 302
    assert login(Client(), "bob", PASSWORD, REMOTE_ADDR="10.0.0.5").status_code == 302


@pytest.mark.django_db
def test_without_trusted_proxies_a_forged_forwarded_for_does_not_dodge_the_lockout(make_user):
    make_user("alice", "viewer")
    client = Client()
    for i in range(LIMIT):
        login(client, "alice", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    response = login(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert response.status_code == 429
    assert set(AuditEvent.objects.values_list("source_ip", flat=True)) == {"127.0.0.1"}


@pytest.mark.django_db
@override_settings(TRUSTED_PROXY_HOPS=1)
def test_behind_one_trusted_proxy_the_address_is_the_one_the_proxy_appended(make_user):
    make_user("alice", "viewer")
    proxy = {"REMOTE_ADDR": "10.1.1.1"}
    client = Client()
    for _ in range(LIMIT):
        # The client forges a first entry; the proxy appends the real address.
        login(client, "alice", "wrong", HTTP_X_FORWARDED_FOR="1.2.3.4, 192.0.2.7", **proxy)
    locked = login(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="9.9.9.9, 192.0.2.7", **proxy)
    assert locked.status_code == 429
    other = login(Client(), "alice", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.8", **proxy)
    assert other.status_code == 302
    failed = AuditEvent.objects.filter(action="login.failed")
    assert set(failed.values_list("source_ip", flat=True)) == {"192.0.2.7"}


@pytest.mark.django_db
def test_a_deactivated_user_cannot_sign_in(make_user):
    user = make_user("alice", "viewer")
    user.is_active = False
    user.save()
    assert login(Client(), "alice", PASSWORD).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("roles", "home"),
    [
        (("viewer",), "/"),
        (("auditor",), "/audit/"),
        (("admin",), "/settings/"),
        ((), "/account/tokens/"),
    ],
)
def test_sign_in_lands_on_the_first_page_the_roles_open(make_user, roles, home):
    make_user("alice", *roles)
    assert login(Client(), "alice", PASSWORD)["Location"] == home


@pytest.mark.django_db
def test_the_sign_in_page_carries_the_inline_icon_so_browsers_ask_for_no_favicon():
    # Without it a browser asks for /favicon.ico, a 404 in its console on every sign-in.
    page = Client().get("/login/").content.decode()
    assert '<link rel="icon" href="data:image/svg+xml,' in page


@pytest.mark.django_db
def test_an_auditor_sent_to_the_overview_lands_on_the_audit_log_not_on_a_refusal(make_user):
    # The flow of a browser: the overview asks for a sign-in with next=/, which the
    # auditor's roles do not open; before, they landed on "Permission denied" (audited).
    make_user("audrey", "auditor")
    client = Client()
    asked = client.get("/")
    assert asked["Location"] == "/login/?next=/"
    response = client.post(
        "/login/?next=/", {"username": "audrey", "password": PASSWORD, "next": "/"}
    )
    assert response["Location"] == "/audit/"
    assert client.get(response["Location"]).status_code == 200
    assert not AuditEvent.objects.filter(action="permission.denied").exists()


@pytest.mark.django_db
def test_a_next_page_the_roles_open_is_kept(make_user):
    make_user("audrey", "auditor")
    response = login(Client(), "audrey", PASSWORD, QUERY_STRING="next=/audit/%3Faction%3Dlogin")
    assert response["Location"] == "/audit/?action=login"
