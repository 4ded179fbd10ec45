"""Rotating ELASTICKV_ADMIN_TOKEN_HASH_KEY and ELASTICKV_ADMIN_AUDIT_KEY like the secrets key:
the new key becomes the primary, the old one moves to ``*_OLD_KEYS``. Stored hashes and MACs
name their key by id, so what the old key made keeps verifying (tokens, the audit chain, its
anchor file and log stream), what is made now uses the new key, and data from before key ids
verifies too. No key ever shows in an error or a log line."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.actions import do_create_api_token
from accounts.models import ApiToken
from accounts.tokens import TokenRejected, authenticate_token
from audit.anchor import read_anchor, read_log
from audit.chain import verify_chain
from audit.models import AuditEvent
from audit.service import record_event
from elastickv_admin.lib.crypto import Keyring, key_id

pytestmark = pytest.mark.django_db

OLD = "old-key-for-rotation-tests-0123456789abcdef"
NEW = "new-key-for-rotation-tests-fedcba9876543210"


def tokens_under(primary: str, *old: str) -> Any:
    return override_settings(TOKEN_HASH_KEY=primary, TOKEN_HASH_OLD_KEYS=list(old))


def audit_under(primary: str, *old: str) -> Any:
    return override_settings(AUDIT_KEY=primary, AUDIT_OLD_KEYS=list(old))


# --- API tokens ------------------------------------------------------------------------------


def test_a_token_made_before_the_rotation_still_authenticates_and_new_ones_use_the_new_key(
    make_user,
):
    user = make_user("rot-tokens", "viewer")
    with tokens_under(OLD):
        before = do_create_api_token(user, user, "before")
    assert before.token.hash_key_id == key_id(OLD)
    with tokens_under(NEW, OLD):
        assert authenticate_token(before.plaintext).pk == before.token.pk
        after = do_create_api_token(user, user, "after")
        assert after.token.hash_key_id == key_id(NEW) != key_id(OLD)
        assert authenticate_token(after.plaintext).pk == after.token.pk


def test_dropping_the_old_key_retires_the_tokens_it_hashed(make_user):
    user = make_user("rot-drop", "viewer")
    with tokens_under(OLD):
        before = do_create_api_token(user, user, "before")
    with tokens_under(NEW), pytest.raises(TokenRejected, match="invalid API token") as exc:
        authenticate_token(before.plaintext)
    assert OLD not in str(exc.value)
    assert NEW not in str(exc.value)


def test_a_token_from_before_key_ids_verifies_under_the_current_or_an_old_key(make_user):
    user = make_user("rot-legacy", "viewer")
    with tokens_under(OLD):
        legacy = do_create_api_token(user, user, "legacy")
    ApiToken.objects.filter(pk=legacy.token.pk).update(hash_key_id="")  # as migrated
    with tokens_under(OLD):
        assert authenticate_token(legacy.plaintext).pk == legacy.token.pk
    with tokens_under(NEW, OLD):
        assert authenticate_token(legacy.plaintext).pk == legacy.token.pk
    with tokens_under(NEW), pytest.raises(TokenRejected):
        authenticate_token(legacy.plaintext)


def test_a_key_id_that_names_another_key_does_not_open_the_token(make_user):
    user = make_user("rot-swap", "viewer")
    with tokens_under(OLD):
        made = do_create_api_token(user, user, "t")
    ApiToken.objects.filter(pk=made.token.pk).update(hash_key_id=key_id(NEW))
    with tokens_under(NEW, OLD), pytest.raises(TokenRejected):
        authenticate_token(made.plaintext)


# --- the audit chain -------------------------------------------------------------------------


@pytest.fixture
def audit_log(caplog: Any, django_capture_on_commit_callbacks: Any, tmp_path: Path) -> Any:
    """Commit events (their log lines and anchor moves run) and keep the log stream."""
    path = tmp_path / "siem.jsonl"

    def write(count: int) -> Path:
        with (
            caplog.at_level(logging.INFO, logger="elastickv_admin.audit"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            for i in range(count):
                record_event("test.rotation", target=f"t{i}", details={"i": i})
        lines = [r.getMessage() for r in caplog.records if r.name == "elastickv_admin.audit"]
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


def verify(*args: str) -> str:
    out = StringIO()
    call_command("audit_verify", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_a_chain_spanning_a_rotation_verifies_with_its_anchor_and_log(audit_log):
    with audit_under(OLD):
        audit_log(3)
    with audit_under(NEW, OLD):
        log = audit_log(2)
        ids = list(AuditEvent.objects.order_by("seq").values_list("key_id", flat=True))
        assert ids == [key_id(OLD)] * 3 + [key_id(NEW)] * 2
        assert verify_chain().ok
        out = verify("--log", str(log))
        assert out.startswith("audit chain OK: 5 events verified\n")
        # The anchor names the key that signed it; the log lines theirs.
        raw = json.loads(Path(settings.AUDIT_ANCHOR_FILE).read_text())
        assert raw["kid"] == key_id(NEW)
        assert [r.seq for r in read_log(log)] == [1, 2, 3, 4, 5]
        assert OLD not in out
        assert NEW not in out


def test_an_anchor_signed_before_the_rotation_is_read_with_the_old_key(audit_log):
    with audit_under(OLD):
        audit_log(2)
    with audit_under(NEW, OLD):
        anchor = read_anchor(Path(settings.AUDIT_ANCHOR_FILE))
        assert anchor is not None
        assert anchor.seq == 2
        assert verify().startswith("audit chain OK: 2 events verified\n")


def test_without_the_old_key_the_events_it_macd_no_longer_verify(audit_log):
    with audit_under(OLD):
        audit_log(2)
    with audit_under(NEW):
        result = verify_chain()
        assert not result.ok
        assert result.broken_seq == 1
        with pytest.raises(CommandError) as exc:
            verify()
    assert OLD not in str(exc.value)
    assert NEW not in str(exc.value)


def test_events_from_before_key_ids_verify_after_a_rotation(audit_log):
    with audit_under(OLD):
        log = audit_log(3)
    AuditEvent.objects.update(key_id="")  # as migrated: rows from before key ids
    # ... and log lines and an anchor written before key ids carried none.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text(
        "".join(json.dumps({k: v for k, v in d.items() if k != "key_id"}) + "\n" for d in lines)
    )
    anchor_file = Path(settings.AUDIT_ANCHOR_FILE)
    raw = json.loads(anchor_file.read_text())
    del raw["kid"]
    anchor_file.write_text(json.dumps(raw).ljust(255) + "\n")
    with audit_under(NEW, OLD):
        assert verify("--log", str(log)).startswith("audit chain OK: 3 events verified\n")
        record_event("test.after")
        assert verify_chain().ok


def test_a_keyring_never_shows_its_keys():
    ring = Keyring.of(NEW, [OLD])
    text = f"{ring!r} {ring!s}"
    assert NEW not in text
    assert OLD not in text
    assert key_id(NEW) in text
