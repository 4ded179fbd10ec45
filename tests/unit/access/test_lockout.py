"""Sign-in lockout beyond the (username, address) pair (issue #13 item 9): one username from
many addresses, one address spraying many usernames, and the admins' list of lockouts with
its audited unlock."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

from accounts import lockout
from audit.models import AuditEvent
from tests.conftest import PASSWORD
from tests.unit.test_settings import load_settings

pytestmark = pytest.mark.django_db

PAIR_LIMIT = settings.AXES_FAILURE_LIMIT
USERNAME_LIMIT = settings.LOGIN_FAILURE_LIMIT_PER_USERNAME
ADDRESS_LIMIT = settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS


def login(username: str, password: str, address: str):
    return Client().post(
        "/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


def guess_from_many_addresses(username: str) -> None:
    """USERNAME_LIMIT failures, each address staying under the pair limit."""
    statuses = [
        login(username, "wrong", f"203.0.113.{i}").status_code for i in range(USERNAME_LIMIT)
    ]
    # The failure that reaches the limit is already answered with the lockout.
    assert statuses == [400] * (USERNAME_LIMIT - 1) + [429]


def spray_from_one_address(address: str) -> None:
    statuses = [login(f"user{i}", "Winter2026!", address).status_code for i in range(ADDRESS_LIMIT)]
    assert statuses == [400] * (ADDRESS_LIMIT - 1) + [429]


def test_the_wider_scopes_need_more_failures_than_the_pair():
    # The DoS trade-off: locking an account from anywhere takes more than the pair's limit.
    assert settings.AXES_LOCKOUT_PARAMETERS == lockout.LOCKOUT_PARAMETERS
    assert USERNAME_LIMIT > PAIR_LIMIT
    assert ADDRESS_LIMIT > PAIR_LIMIT


def test_one_username_guessed_from_many_addresses_gets_locked(make_user):
    make_user("alice", "viewer")
    guess_from_many_addresses("alice")
    # Even the right password, from an address that never failed, is refused now.
    refused = login("alice", PASSWORD, "198.51.100.9")
    assert refused.status_code == 429
    assert b"Too many failed sign-ins for this user." in refused.content
    lock = AuditEvent.objects.filter(action="login.lockout").first()
    assert lock is not None
    assert "username" in lock.details["scopes"]
    # Other users are not affected.
    make_user("bob", "viewer")
    assert login("bob", PASSWORD, "198.51.100.9").status_code == 302


def test_one_address_spraying_many_usernames_gets_throttled(make_user):
    make_user("alice", "viewer")
    spray_from_one_address("192.0.2.66")
    refused = login("alice", PASSWORD, "192.0.2.66")
    assert refused.status_code == 429
    assert b"Too many failed sign-ins from your address." in refused.content
    # The same user from elsewhere is fine: the address is locked, not the account.
    assert login("alice", PASSWORD, "192.0.2.67").status_code == 302


def test_a_sprayers_one_valid_account_does_not_reset_the_address_count(make_user):
    make_user("mallory", "viewer")
    for i in range(ADDRESS_LIMIT - 1):
        login(f"user{i}", "Winter2026!", "192.0.2.66")
    # A success forgives only mallory's own failures from there, not the spray.
    assert login("mallory", PASSWORD, "192.0.2.66").status_code == 302
    login("user-last", "Winter2026!", "192.0.2.66")
    assert login("mallory", PASSWORD, "192.0.2.66").status_code == 429


def test_admin_sees_the_lockouts_on_the_settings_page_and_unlocking_is_audited(make_user):
    make_user("alice", "viewer")
    admin = make_user("boss", "admin")
    guess_from_many_addresses("alice")
    client = Client()
    client.force_login(admin)
    page = client.get("/settings/").content.decode()
    assert "Sign-in lockouts" in page
    assert "user <code>alice</code> from any address" in page
    assert {(lock.scope, lock.username) for lock in lockout.current_lockouts()} == {
        ("username", "alice")
    }
    unlocked = client.post(
        "/settings/lockouts/unlock/",
        {"scope": "username", "username": "alice", "ip_address": ""},
    )
    assert unlocked.status_code == 200
    assert b"Unlocked alice" in unlocked.content
    assert lockout.current_lockouts() == []
    assert not AccessAttempt.objects.filter(username="alice").exists()
    event = AuditEvent.objects.get(action="login.unlocked")
    assert (event.actor, event.target, event.outcome) == ("boss", "user:alice", "success")
    assert event.details == {
        "scope": "username",
        "username": "alice",
        "ip_address": "",
        "failures_cleared": USERNAME_LIMIT,
    }
    assert login("alice", PASSWORD, "198.51.100.9").status_code == 302


def test_admin_unlocks_a_spraying_address(make_user):
    admin = make_user("boss", "admin")
    spray_from_one_address("192.0.2.66")
    client = Client()
    client.force_login(admin)
    assert "address <code>192.0.2.66</code>, any user" in client.get("/settings/").content.decode()
    client.post("/settings/lockouts/unlock/", {"scope": "address", "ip_address": "192.0.2.66"})
    assert lockout.current_lockouts() == []
    assert AuditEvent.objects.get(action="login.unlocked").target == "address:192.0.2.66"


def test_unlocking_what_is_not_locked_or_an_unknown_scope_says_so(make_user):
    client = Client()
    client.force_login(make_user("boss", "admin"))
    gone = client.post("/settings/lockouts/unlock/", {"scope": "username", "username": "x"})
    assert gone.status_code == 400
    assert b"already ended" in gone.content
    bad = client.post("/settings/lockouts/unlock/", {"scope": "everything"})
    assert bad.status_code == 400
    assert b"unknown lockout scope" in bad.content
    assert not AuditEvent.objects.filter(action="login.unlocked").exists()


def test_a_non_admin_cannot_unlock(make_user):
    make_user("alice", "viewer")
    guess_from_many_addresses("alice")
    client = Client()
    client.force_login(make_user("eve", "viewer", "auditor"))
    refused = client.post("/settings/lockouts/unlock/", {"scope": "username", "username": "alice"})
    assert refused.status_code == 403
    assert AccessAttempt.objects.filter(username="alice").exists()
    assert login("alice", PASSWORD, "198.51.100.9").status_code == 429
    assert not AuditEvent.objects.filter(action="login.unlocked").exists()


def test_a_wider_limit_below_the_pair_limit_is_a_startup_error(tmp_path):
    result = load_settings(
        tmp_path,
        SECRET_KEY="k" * 40,
        ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT="5",
        ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT_PER_USERNAME="3",
    )
    assert "ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT_PER_USERNAME must be at least 5" in result.stderr
