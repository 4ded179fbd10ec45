"""Every do_* action takes its actor first and names it in its audit event, whatever the
ambient request or command context says (zulip's acting_user)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import actions
from audit.context import AuditContext, audit_context
from audit.models import AuditEvent
from audit.service import do_note_export, do_prune
from elastickv_admin.reencrypt import do_reencrypt_secrets

pytestmark = pytest.mark.django_db


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("seq")


def test_an_action_names_the_actor_it_is_given_not_the_ambient_one(make_user):
    admin = make_user("act-admin", "admin")
    target = make_user("act-target", "viewer")
    # A context that says someone else is acting: the explicit actor wins.
    with audit_context(AuditContext(request_id="r1", actor="somebody-else")):
        actions.do_set_roles(admin, target, ["auditor"])
        actions.do_set_active(admin, target, False)
        actions.do_end_sessions(admin, target)
        actions.do_reset_password(admin, target)
        actions.do_remove_totp(admin, target)
        actions.do_update_site_settings(admin, audit_retention_days=30)
        token = actions.do_create_api_token(admin, target, "t")
        actions.do_revoke_api_token(admin, token.token)
        actions.do_create_user(admin, "act-new", ["viewer"])
        do_note_export(admin, "csv", {"q": "a&b=c"})
    for action in (
        "user.roles_changed",
        "user.deactivated",
        "user.sessions_ended",
        "user.password_reset",
        "mfa.removed",
        "settings.changed",
        "api_token.created",
        "api_token.revoked",
        "user.created",
        "audit.exported",
    ):
        assert last(action).actor == "act-admin", action


def test_a_command_actor_is_a_name(make_user):
    actions.do_set_roles("cli:ops", make_user("act-cli", "viewer"), ["admin"])
    assert last("user.roles_changed").actor == "cli:ops"
    do_reencrypt_secrets("cli:ops")
    assert last("secrets.reencrypted").actor == "cli:ops"
    result = do_prune("cli:ops", timezone.now() - timedelta(days=1))
    assert result.event is not None
    assert result.event.actor == "cli:ops"


def test_an_admin_cannot_remove_their_own_admin_role_or_deactivate_themselves(make_user):
    admin = make_user("act-self", "admin")
    with pytest.raises(actions.ActionRefused):
        actions.do_set_roles(admin, admin, ["viewer"])
    with pytest.raises(actions.ActionRefused):
        actions.do_set_active(admin, admin, False)
    # Someone else (or a command) may.
    actions.do_set_roles("cli:ops", admin, ["viewer"])
