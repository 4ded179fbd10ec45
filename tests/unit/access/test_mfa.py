"""TOTP second factor: enrolment, the second sign-in step, throttling, seeds encrypted at
rest, and the site setting that requires it for admins."""

from __future__ import annotations

from base64 import b32encode
from datetime import timedelta

import pytest
from cryptography.fernet import InvalidToken
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from django_otp.oath import TOTP

from accounts.actions import do_start_totp, do_update_site_settings
from accounts.models import TOTPDevice
from audit.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def code_for(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, 0, device.digits, 0)
    totp.time = totp.time + steps_ahead * device.step
    return f"{totp.token():06d}"


def enrolled(user) -> TOTPDevice:
    device, _ = do_start_totp(user)
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    device.refresh_from_db()
    return device


def password_step(client: Client, username: str):
    return client.post("/login/", {"username": username, "password": PASSWORD, "next": "/nodes/"})


def test_enrolment_from_the_account_page_confirms_with_a_code(make_user):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    page = client.post("/account/mfa/", {"step": "start"})
    assert page.status_code == 200
    assert b"<svg" in page.content  # the QR code
    device = TOTPDevice.objects.get()
    assert device.confirmed is False
    wrong = client.post("/account/mfa/", {"step": "confirm", "otp_token": "000000"})
    assert wrong.status_code == 400
    TOTPDevice.objects.update(throttling_failure_timestamp=None, throttling_failure_count=0)
    right = client.post("/account/mfa/", {"step": "confirm", "otp_token": code_for(device)})
    assert right.status_code == 200
    assert TOTPDevice.objects.get().confirmed is True
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions == ["mfa.enrolment_started", "mfa.failed", "mfa.enrolled"]


def test_an_enrolled_user_needs_the_code_after_the_password(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    response = password_step(client, "alice")
    assert response["Location"] == "/login/mfa/"
    assert client.get("/nodes/").status_code == 302  # not signed in yet
    signed_in = client.post("/login/mfa/", {"otp_token": code_for(device)})
    assert signed_in["Location"] == "/nodes/"
    assert client.get("/nodes/").status_code == 200
    login = AuditEvent.objects.get(action="login")
    assert login.details == {"mfa": True}


def test_a_wrong_code_is_refused_audited_and_throttled(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    password_step(client, "alice")
    wrong = client.post(
        "/login/mfa/", {"otp_token": "123456" if code_for(device) != "123456" else "654321"}
    )
    assert wrong.status_code == 400
    # One wrong code says what happened, not "too many" and no wait.
    assert b"Wrong code; try again." in wrong.content
    assert b"Too many" not in wrong.content
    assert b"wait" not in wrong.content
    assert AuditEvent.objects.filter(action="mfa.failed", outcome="failure").count() == 1
    # Right away even the right code waits out the back-off.
    throttled = client.post("/login/mfa/", {"otp_token": code_for(device)})
    assert throttled.status_code == 400
    assert b"Too many wrong codes" in throttled.content
    TOTPDevice.objects.update(throttling_failure_timestamp=timezone.now() - timedelta(seconds=30))
    assert client.post("/login/mfa/", {"otp_token": code_for(device)}).status_code == 302


def test_a_code_is_accepted_once(make_user):
    device = enrolled(make_user("alice", "viewer"))
    code = code_for(device)
    first, second = Client(), Client()
    password_step(first, "alice")
    password_step(second, "alice")
    assert first.post("/login/mfa/", {"otp_token": code}).status_code == 302
    assert second.post("/login/mfa/", {"otp_token": code}).status_code == 400


def test_the_second_step_without_a_password_step_goes_back_to_login():
    assert Client().get("/login/mfa/")["Location"] == "/login/"


def test_totp_seeds_are_encrypted_at_rest(make_user):
    device = enrolled(make_user("alice", "viewer"))
    seed = device.bin_key
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_totpdevice")
        dump = str(cursor.fetchall())
    assert seed.hex() not in dump
    assert b32encode(seed).decode() not in dump
    assert device.encrypted_key.startswith("gAAAAA")  # Fernet
    # The key lives outside the database: without it the seed is unreadable.
    with (
        override_settings(SECRETS_KEY="some-other-key-0123456789abcdef"),
        pytest.raises(InvalidToken),
    ):
        TOTPDevice.objects.get().bin_key  # noqa: B018


def test_required_mfa_makes_an_admin_enrol_before_signing_in(make_user):
    do_update_site_settings("system", require_mfa_for_admins=True)
    make_user("boss", "admin")
    client = Client()
    assert password_step(client, "boss")["Location"] == "/login/mfa/"
    page = client.get("/login/mfa/")
    assert b"Set up two-factor sign-in" in page.content
    device = TOTPDevice.objects.get(confirmed=False)
    response = client.post("/login/mfa/", {"otp_token": code_for(device)})
    assert response.status_code == 302
    assert client.get("/settings/").status_code == 200
    assert TOTPDevice.objects.get().confirmed is True


def test_required_mfa_does_not_concern_viewers(make_user):
    do_update_site_settings("system", require_mfa_for_admins=True)
    make_user("alice", "viewer")
    assert password_step(Client(), "alice")["Location"] == "/nodes/"


def test_a_signed_in_admin_without_a_second_factor_is_sent_to_enrol_when_it_becomes_required(
    make_user,
):
    client = Client()
    client.force_login(make_user("boss", "admin"))
    assert client.get("/settings/").status_code == 200
    do_update_site_settings("system", require_mfa_for_admins=True)
    assert client.get("/settings/")["Location"] == "/account/mfa/"
    page = client.get("/account/mfa/")
    assert b"requires admins to use a second factor" in page.content
    refused = client.post("/account/mfa/", {"step": "remove"})
    assert refused.status_code == 200  # nothing to remove yet; still required


# --- turning the second factor off (issue #13 item 11) ---------------------------------------


def _remove(client: Client, **proof: str):
    return client.post("/account/mfa/", {"step": "remove", **proof})


def test_a_hijacked_session_cannot_turn_off_the_second_factor_without_proof(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    response = _remove(client)
    assert response.status_code == 400
    assert b"enter your current password or a current code" in response.content
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    refused = AuditEvent.objects.get(action="mfa.remove_refused")
    assert (refused.outcome, refused.target, refused.details) == (
        "denied",
        "user:alice",
        {"proof": "none"},
    )
    assert not AuditEvent.objects.filter(action="mfa.removed").exists()


def test_turning_off_the_second_factor_with_a_wrong_password_is_refused_and_audited(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    response = _remove(client, password="guessed-wrong")
    assert response.status_code == 400
    assert b"That password is not right" in response.content
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    refused = AuditEvent.objects.get(action="mfa.remove_refused")
    assert refused.details == {"proof": "password"}
    assert "guessed-wrong" not in str(list(AuditEvent.objects.values_list("details", flat=True)))
    # The guess counts towards the sign-in lockout like any wrong password.
    assert AuditEvent.objects.filter(action="login.failed", target="user:alice").exists()


def test_turning_off_the_second_factor_with_a_wrong_code_is_refused(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    wrong = "123456" if code_for(device) != "123456" else "654321"
    response = _remove(client, otp_token=wrong)
    assert response.status_code == 400
    assert b"That code is not right" in response.content
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    assert AuditEvent.objects.get(action="mfa.remove_refused").details == {"proof": "code"}


def test_turning_off_the_second_factor_with_the_current_password_works(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    response = _remove(client, password=PASSWORD)
    assert response.status_code == 200
    assert b"Two-factor sign-in is off" in response.content
    assert not TOTPDevice.objects.exists()
    removed = AuditEvent.objects.get(action="mfa.removed")
    assert (removed.actor, removed.target) == ("alice", "user:alice")


def test_turning_off_the_second_factor_with_a_current_code_works(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    assert _remove(client, otp_token=code_for(device)).status_code == 200
    assert not TOTPDevice.objects.exists()


def test_an_admin_removing_another_users_second_factor_is_audited_with_the_admin_as_actor(
    make_user,
):
    device = enrolled(make_user("alice", "viewer"))
    admin = make_user("boss", "admin")
    client = Client()
    client.force_login(admin)
    response = client.post(f"/settings/users/{device.user.pk}/", {"step": "remove-mfa"})
    assert response.status_code == 200
    assert not TOTPDevice.objects.exists()
    removed = AuditEvent.objects.get(action="mfa.removed")
    assert (removed.actor, removed.target) == ("boss", "user:alice")
    assert removed.details["by"] == "boss"


def test_repeated_refused_removals_fold_into_one_counted_event(make_user):
    device = enrolled(make_user("alice", "viewer"))
    client = Client()
    client.force_login(device.user)
    for _ in range(20):
        assert _remove(client).status_code == 400
    refused = AuditEvent.objects.filter(action="mfa.remove_refused")
    assert refused.count() == 1
    assert AuditEvent.objects.count() == 2  # and mfa.enrolment_started; no http.post per try
