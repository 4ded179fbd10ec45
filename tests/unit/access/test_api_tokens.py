"""Personal API tokens: shown once, stored as a keyed hash, Bearer on /api/*, owner's roles,
read-only unless marked, expiry, revocation, last used at most once a minute."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from accounts.actions import do_create_api_token, do_revoke_api_token
from accounts.models import ApiToken
from accounts.tokens import hash_secret
from audit.models import AuditEvent
from elastickv_admin.lib.config import PortalConfig


def found(pattern: bytes, content: bytes) -> re.Match[bytes]:
    match = re.search(pattern, content)
    assert match is not None, pattern
    return match


pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("no_nodes"),
]
API = "/api/keyviz/matrix"


@pytest.fixture
def no_nodes():
    with override_settings(
        ELASTICKV_ADMIN=PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True)
    ):
        yield


def bearer(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


def test_token_page_shows_a_new_token_once_and_stores_only_its_keyed_hash(make_user):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    response = client.post("/account/tokens/", {"name": "ci", "expires_days": "30"})
    assert response.status_code == 200
    plaintext = found(rb"ekv_[a-z0-9]{12}_[A-Za-z0-9_-]+", response.content).group().decode()
    _, public_id, secret = plaintext.split("_", 2)
    row = ApiToken.objects.get()
    assert row.public_id == public_id
    assert row.secret_hash == hash_secret(secret) != secret
    assert row.read_only is True
    assert row.expires is not None
    # Shown once: the list shows the public id only.
    again = client.get("/account/tokens/")
    assert public_id.encode() in again.content
    assert secret.encode() not in again.content
    # Nowhere in the database.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        assert secret not in str(cursor.fetchall())
    assert AuditEvent.objects.filter(
        action="api_token.created", target=f"token:{public_id}"
    ).exists()


def test_the_hash_is_keyed_by_a_secret_outside_the_database(make_user):
    alice = make_user("alice", "viewer")
    created = do_create_api_token(alice, alice, "x")
    secret = created.plaintext.split("_", 2)[2]
    with override_settings(TOKEN_HASH_KEY="another-key-entirely-0123456789"):
        assert hash_secret(secret) != created.token.secret_hash
        # With another key the stored hash no longer matches: the token is useless.
        assert bearer(created.plaintext).get(API).status_code == 401


def test_bearer_token_reads_the_api_with_the_owners_roles(make_user, api_token_for):
    viewer_token = api_token_for(make_user("v", "viewer"))
    auditor_token = api_token_for(make_user("a", "auditor"))
    assert bearer(viewer_token).get(API).status_code == 200  # passed access: read the store
    refused = bearer(auditor_token).get(API)
    assert refused.status_code == 403
    assert refused.json()["code"] == 403


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ekv_000000000000_" + "x" * 43,
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
)
def test_a_bad_authorization_header_gets_401_with_the_envelope(header):
    response = Client(headers={"Authorization": header}).get(API)
    assert response.status_code == 401
    assert response.json()["code"] == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_secret_for_a_real_public_id_is_refused(make_user, api_token_for):
    token = api_token_for(make_user("v", "viewer"))
    forged = token[: token.rindex("_") + 1] + "A" * 43
    assert bearer(forged).get(API).status_code == 401


def test_read_only_tokens_may_only_read(make_user, api_token_for):
    user = make_user("v", "viewer")
    read_only = api_token_for(user)
    read_write = api_token_for(user, read_only=False)
    refused = bearer(read_only).post(API)
    assert refused.status_code == 403
    assert "read-only" in refused.json()["message"]
    assert AuditEvent.objects.filter(action="permission.denied", target=API).exists()
    # A read-write token passes access; the endpoint itself answers GET only.
    assert bearer(read_write).post(API).status_code == 405


def test_revoked_and_expired_tokens_are_refused(make_user):
    user = make_user("v", "viewer")
    revoked = do_create_api_token(user, user, "old")
    do_revoke_api_token(user, revoked.token)
    assert bearer(revoked.plaintext).get(API).json()["message"] == "API token revoked"
    expired = do_create_api_token(user, user, "short", expires_days=1)
    ApiToken.objects.filter(pk=expired.token.pk).update(expires=timezone.now() - timedelta(1))
    assert bearer(expired.plaintext).get(API).json()["message"] == "API token expired"
    assert AuditEvent.objects.filter(action="api_token.revoked").count() == 1


def test_a_deactivated_owners_token_is_refused(make_user, api_token_for):
    user = make_user("v", "viewer")
    token = api_token_for(user)
    user.is_active = False
    user.save()
    assert bearer(token).get(API).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(make_user, api_token_for):
    token = api_token_for(make_user("v", "viewer"))
    client = bearer(token)
    client.get(API)
    first = ApiToken.objects.get().last_used
    assert first is not None
    client.get(API)
    client.get(API)
    assert ApiToken.objects.get().last_used == first
    assert AuditEvent.objects.filter(action="api_token.used").count() == 1
    ApiToken.objects.update(last_used=first - timedelta(seconds=61))
    client.get(API)
    assert (ApiToken.objects.get().last_used or first) > first
    assert AuditEvent.objects.filter(action="api_token.used").count() == 2


def test_revoke_is_for_the_owner_or_an_admin(make_user, api_token_for):
    owner = make_user("owner", "viewer")
    api_token_for(owner)
    token = ApiToken.objects.get()
    other = Client()
    other.force_login(make_user("other", "viewer"))
    assert other.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    boss = Client()
    boss.force_login(make_user("boss", "admin"))
    assert boss.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None


def test_create_api_token_command_prints_only_the_token(make_user):
    make_user("robot", "viewer")
    out = StringIO()
    call_command("create_api_token", "robot", "--name", "ci", "--expires-days", "7", stdout=out)
    printed = out.getvalue()
    assert re.fullmatch(r"ekv_[a-z0-9]{12}_[A-Za-z0-9_-]{43}\n", printed)
    row = ApiToken.objects.get()
    assert (row.name, row.read_only) == ("ci", True)
    assert bearer(printed.strip()).get(API).status_code == 200
    event = AuditEvent.objects.get(action="api_token.created")
    assert event.actor.startswith("cli:")
