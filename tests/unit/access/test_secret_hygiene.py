"""Secrets never reach the database or the logs in clear: passwords, API tokens, TOTP seeds,
and the keys kept outside the database."""

from __future__ import annotations

import logging
import re
from base64 import b32encode

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django_otp.oath import TOTP

from accounts.models import TOTPDevice


def found(pattern: bytes, content: bytes) -> re.Match[bytes]:
    match = re.search(pattern, content)
    assert match is not None, pattern
    return match


pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Un1que-Pass-phrase-for-grep"


def database_dump() -> str:
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (table names from the schema)
            parts.append(f"{table}: {cursor.fetchall()!r}")
    return "\n".join(parts)


def test_flows_that_use_secrets_leave_none_in_the_database_or_logs(
    make_user, caplog, django_capture_on_commit_callbacks
):
    user = make_user("alice", "viewer")
    user.set_password(NEW_PASSWORD)
    user.save()
    secrets_seen: list[str] = [NEW_PASSWORD]
    with (
        caplog.at_level(logging.DEBUG),
        django_capture_on_commit_callbacks(execute=True),
    ):
        client = Client()
        # A failed login (the wrong password is a secret too), then a good one.
        client.post("/login/", {"username": "alice", "password": NEW_PASSWORD + "x"})
        secrets_seen.append(NEW_PASSWORD + "x")
        client.post("/login/", {"username": "alice", "password": NEW_PASSWORD})
        # An API token: created, used, revoked.
        page = client.post("/account/tokens/", {"name": "ci"})
        token = found(rb"ekv_[a-z0-9]{12}_[A-Za-z0-9_-]+", page.content).group().decode()
        secrets_seen += [token, token.split("_", 2)[2]]
        Client(headers={"Authorization": f"Bearer {token}"}).get("/api/keyviz/matrix")
        # A TOTP enrolment with a wrong and a right code.
        client.post("/account/mfa/", {"step": "start"})
        device = TOTPDevice.objects.get()
        seed = device.bin_key
        secrets_seen += [seed.hex(), b32encode(seed).decode()]
        client.post("/account/mfa/", {"step": "confirm", "otp_token": "000000"})
        TOTPDevice.objects.update(throttling_failure_count=0, throttling_failure_timestamp=None)
        code = f"{TOTP(seed).token():06d}"
        client.post("/account/mfa/", {"step": "confirm", "otp_token": code})
        client.post("/logout/")
    secrets_seen += [settings.AUDIT_KEY, settings.TOKEN_HASH_KEY, settings.SECRETS_KEY]
    dump = database_dump()
    logs = caplog.text
    assert "audit_auditevent" in dump
    assert "api_token.used" in dump
    assert "api_token.created" in logs, "the audit log stream was captured"
    for secret in secrets_seen:
        assert secret not in dump, f"a secret is in the database: {secret[:6]}..."
        assert secret not in logs, f"a secret is in the logs: {secret[:6]}..."
