"""No unaudited state change: when the audit write fails (here the database refuses the
insert, as on a full disk), the action it records fails too, with a clear error."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from accounts.actions import do_set_roles, roles_of
from accounts.models import ApiToken, UserSession
from audit.models import AuditEvent
from audit.service import AuditWriteError
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit_refuses_writes():
    """A trigger makes every audit insert fail inside the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER audit_disk_full BEFORE INSERT ON audit_auditevent "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER audit_disk_full")


@pytest.mark.usefixtures("audit_refuses_writes")
def test_an_action_function_rolls_back_when_its_event_cannot_be_written(make_user):
    user = make_user("carol", "viewer")
    with pytest.raises(AuditWriteError, match=r"user\.roles_changed was not performed"):
        do_set_roles("system", user, ["admin"])
    user.refresh_from_db()
    assert roles_of(user) == ["viewer"]


def test_a_page_action_answers_503_and_changes_nothing(make_user, request):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    request.getfixturevalue("audit_refuses_writes")
    response = client.post("/account/tokens/", {"name": "ci"})
    assert response.status_code == 503
    assert b"the audit log could not be written" in response.content
    assert b"database or disk is full" in response.content
    assert ApiToken.objects.count() == 0


@pytest.mark.usefixtures("audit_refuses_writes")
def test_a_login_that_cannot_be_audited_does_not_happen(make_user):
    make_user("alice", "viewer")
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 503
    assert UserSession.objects.count() == 0
    assert client.get("/nodes/").status_code == 302


def test_an_api_call_whose_token_use_cannot_be_audited_is_refused(
    make_user, api_token_for, request
):
    token = api_token_for(make_user("v", "viewer"))
    request.getfixturevalue("audit_refuses_writes")
    response = Client(headers={"Authorization": f"Bearer {token}"}).get("/api/keyviz/matrix")
    assert response.status_code == 503
    assert "could not be written" in response.json()["message"]


def test_a_command_fails_and_creates_nothing(make_user, request):
    make_user("robot", "viewer")
    request.getfixturevalue("audit_refuses_writes")
    out = StringIO()
    with pytest.raises(CommandError, match="could not be written"):
        call_command("create_api_token", "robot", stdout=out)
    assert out.getvalue() == ""
    assert ApiToken.objects.count() == 0


def test_the_chain_head_is_untouched_by_a_failed_write(make_user, request):
    from audit.service import record_event

    record_event("test.before")
    request.getfixturevalue("audit_refuses_writes")
    with pytest.raises(AuditWriteError):
        record_event("test.lost")
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER audit_disk_full")
        cursor.execute(
            "CREATE TRIGGER audit_disk_full BEFORE INSERT ON audit_auditevent "
            "WHEN 0 BEGIN SELECT 1; END"
        )
    record_event("test.after")
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "action")) == [
        (1, "test.before"),
        (2, "test.after"),
    ]
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "2 events verified" in out.getvalue()
