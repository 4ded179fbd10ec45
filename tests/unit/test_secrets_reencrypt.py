"""Rotating the at-rest key: with the old key listed as previous, everything still reads;
reencrypt_secrets moves every stored secret to the new key, after which the new key alone
reads everything and the old key reads nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from accounts.actions import do_create_api_token, do_start_totp
from accounts.models import TOTPDevice
from audit.models import AuditEvent
from cluster import node_token
from cluster.models import NodeTokenRecord
from elastickv_admin.lib import crypto
from elastickv_admin.lib.config import PortalConfig
from elastickv_admin.reencrypt import ENCRYPTED_FIELDS
from tests.helpers import FERNET_TEXT

OLD_KEY = "the-old-secrets-key-0123456789abcdef"
NEW_KEY = "the-new-secrets-key-fedcba9876543210"
CURRENT = "the-current-node-token-0123456789"
NEXT = "the-next-node-token-0123456789abc"

pytestmark = pytest.mark.django_db


@pytest.fixture
def secrets_under_old_key(tmp_path, make_user) -> str:
    """A TOTP seed and both node tokens, written under OLD_KEY; returns the hex seed."""
    token_file = tmp_path / "node-token"
    token_file.write_text(CURRENT)
    config = PortalConfig(seeds=("127.0.0.1:1",), node_token_file=str(token_file))
    with override_settings(SECRETS_KEY=OLD_KEY, SECRETS_OLD_KEYS=[], ELASTICKV_ADMIN=config):
        node_token.ensure_node_token()
        node_token.do_start_rotation("admin", NEXT)
        _, seed = do_start_totp(make_user("alice", "admin"))
    return seed


def readable() -> tuple[str, str | None, str | None]:
    tokens = node_token.load_tokens()
    return TOTPDevice.objects.get().bin_key.hex(), tokens.current, tokens.next


def test_reencrypt_moves_every_secret_to_the_new_key_and_the_old_key_then_reads_nothing(
    secrets_under_old_key,
):
    seed = secrets_under_old_key
    before = sorted(NodeTokenRecord.objects.values_list("ciphertext", flat=True))
    with override_settings(SECRETS_KEY=NEW_KEY, SECRETS_OLD_KEYS=[OLD_KEY]):
        assert readable() == (seed, CURRENT, NEXT), "both keys read while rotating"
        out = StringIO()
        call_command("reencrypt_secrets", stdout=out)
    assert "accounts.TOTPDevice.encrypted_key: 1 re-encrypted" in out.getvalue()
    assert "cluster.NodeTokenRecord.ciphertext: 2 re-encrypted" in out.getvalue()
    assert sorted(NodeTokenRecord.objects.values_list("ciphertext", flat=True)) != before
    with override_settings(SECRETS_KEY=NEW_KEY, SECRETS_OLD_KEYS=[]):
        assert readable() == (seed, CURRENT, NEXT), "the new key alone reads everything"
    with override_settings(SECRETS_KEY=OLD_KEY, SECRETS_OLD_KEYS=[]):
        with pytest.raises(crypto.InvalidToken):
            TOTPDevice.objects.get().bin_key  # noqa: B018 (the property decrypts)
        for ciphertext in NodeTokenRecord.objects.values_list("ciphertext", flat=True):
            with pytest.raises(crypto.InvalidToken):
                crypto.decrypt(ciphertext)
    event = AuditEvent.objects.get(action="secrets.reencrypted")
    assert event.details == {
        "values": {"accounts.TOTPDevice.encrypted_key": 1, "cluster.NodeTokenRecord.ciphertext": 2}
    }
    assert event.actor.startswith("cli:")


def test_reencrypt_changes_nothing_when_a_secret_cannot_be_read(secrets_under_old_key):
    before = {
        "totp": list(TOTPDevice.objects.values_list("encrypted_key", flat=True)),
        "node": sorted(NodeTokenRecord.objects.values_list("ciphertext", flat=True)),
    }
    with (
        override_settings(SECRETS_KEY=NEW_KEY, SECRETS_OLD_KEYS=[]),
        pytest.raises(CommandError, match="ELASTICKV_ADMIN_SECRETS_OLD_KEYS; nothing was changed"),
    ):
        call_command("reencrypt_secrets", stdout=StringIO())
    assert before == {
        "totp": list(TOTPDevice.objects.values_list("encrypted_key", flat=True)),
        "node": sorted(NodeTokenRecord.objects.values_list("ciphertext", flat=True)),
    }
    assert not AuditEvent.objects.filter(action="secrets.reencrypted").exists()


def test_every_encrypted_value_in_the_database_is_in_a_field_reencrypt_knows(
    secrets_under_old_key, make_user
):
    bob = make_user("bob", "viewer")
    do_create_api_token(bob, bob, "ci")
    holding: set[tuple[str, str, str]] = set()
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.get_internal_type() not in ("TextField", "CharField", "JSONField"):
                continue
            for value in model._default_manager.values_list(field.attname, flat=True):
                if isinstance(value, str) and re.fullmatch(FERNET_TEXT, value):
                    holding.add((model._meta.app_label, model.__name__, field.name))
    assert holding == set(ENCRYPTED_FIELDS)


def test_previous_keys_come_from_the_environment_comma_or_newline_separated(tmp_path):
    keys = tmp_path / "old-keys"
    keys.write_text("first-old-key\nsecond-old-key, third-old-key\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(settings.SECRETS_OLD_KEYS)",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "ELASTICKV_ADMIN_SECRETS_OLD_KEYS_FILE": str(keys),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "['first-old-key', 'second-old-key', 'third-old-key']"
