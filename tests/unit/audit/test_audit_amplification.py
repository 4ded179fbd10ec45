"""Audit amplification (issue #13 item 10): failures anyone can repeat at will (bogus API
tokens, wrong passwords, refused forms) fold into one summary event per window and source,
with the count, and the chain still verifies."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import F
from django.test import Client, override_settings
from django.utils import timezone

from audit.chain import verify_chain
from audit.failures import flush_failure_windows
from audit.models import AuditEvent, FailureWindow
from elastickv_admin.lib.config import PortalConfig
from tests.failure_race import portal_env, race_failures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_nodes")]

API = "/api/keyviz/matrix"
WINDOW = settings.AUDIT_FAILURE_WINDOW
# Long enough that a thousand requests on a starved machine stay inside one window.
LONG_WINDOW = 3600.0


@pytest.fixture
def no_nodes():
    with override_settings(
        ELASTICKV_ADMIN=PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True)
    ):
        yield


def bogus_token_from(address: str):
    token = f"ekv_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    return Client().get(API, HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=address)


def after_the_window(window: float = WINDOW) -> datetime:
    return timezone.now() + timedelta(seconds=window + 1)


def close_windows() -> None:
    """Time passes: every open window is now older than the window length."""
    FailureWindow.objects.update(opened=F("opened") - timedelta(seconds=WINDOW + 1))


def failures_recorded(action: str, **filters: str) -> int:
    """Failures the log accounts for: each summary's count (which includes the first failure
    of its window), plus first failures whose window needed no summary."""
    events = list(AuditEvent.objects.filter(action=action, **filters))
    summaries = [e for e in events if "count" in e.details]
    summarized = {e.details["first_seq"] for e in summaries}
    singles = [e for e in events if "count" not in e.details and e.seq not in summarized]
    return int(sum(e.details["count"] for e in summaries)) + len(singles)


@override_settings(AUDIT_FAILURE_WINDOW=LONG_WINDOW)
def test_a_thousand_bogus_bearer_tokens_from_one_address_write_at_most_two_audit_rows():
    for _ in range(1000):
        assert bogus_token_from("203.0.113.5").status_code == 401
    assert AuditEvent.objects.count() <= 2
    assert flush_failure_windows(after_the_window(LONG_WINDOW)) == 1
    events = list(AuditEvent.objects.order_by("seq"))
    assert len(events) == 2
    first, summary = events
    assert (first.action, first.outcome, first.source_ip) == (
        "api_token.rejected",
        "denied",
        "203.0.113.5",
    )
    assert first.details == {"reason": "invalid API token"}
    assert summary.action == "api_token.rejected"
    assert summary.source_ip == "203.0.113.5"
    assert summary.details["count"] == 1000
    assert summary.details["window_s"] == LONG_WINDOW
    assert summary.details["first_seq"] == first.seq
    assert failures_recorded("api_token.rejected") == 1000
    assert verify_chain().ok
    assert not FailureWindow.objects.exists()  # closed windows are dropped


def test_the_next_failure_after_the_window_writes_the_summary_and_opens_a_new_window():
    for _ in range(3):
        bogus_token_from("203.0.113.5")
    close_windows()
    bogus_token_from("203.0.113.5")
    actions = list(AuditEvent.objects.order_by("seq").values_list("details", flat=True))
    assert [d.get("count") for d in actions] == [None, 3, None]
    assert failures_recorded("api_token.rejected") == 4
    assert verify_chain().ok


def test_different_sources_and_reasons_are_recorded_separately():
    bogus_token_from("203.0.113.5")
    bogus_token_from("203.0.113.5")
    bogus_token_from("198.51.100.7")
    Client().get(API, HTTP_AUTHORIZATION="Bearer not-a-token", REMOTE_ADDR="203.0.113.5")
    rows = list(AuditEvent.objects.order_by("seq").values_list("source_ip", "details"))
    assert rows == [
        ("203.0.113.5", {"reason": "invalid API token"}),
        ("198.51.100.7", {"reason": "invalid API token"}),
        ("203.0.113.5", {"reason": "malformed API token (expected ekv_<id>_<secret>)"}),
    ]
    flush_failure_windows(after_the_window())
    assert failures_recorded("api_token.rejected", source_ip="203.0.113.5") == 3
    assert failures_recorded("api_token.rejected", source_ip="198.51.100.7") == 1


def test_wrong_passwords_fold_into_counted_events_and_none_is_lost(make_user):
    make_user("alice", "viewer")
    attempts = 60
    for _ in range(attempts):
        Client().post(
            "/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR="203.0.113.5"
        )
    # Before the lockout and after it, each a window: a handful of rows, not 2 per try.
    assert AuditEvent.objects.count() <= 6
    call_command("audit_flush_failures", stdout=StringIO())
    # The flush above sees the windows still open; time passes and it writes them.
    close_windows()
    out = StringIO()
    call_command("audit_flush_failures", stdout=out)
    assert "summary event(s) written" in out.getvalue()
    assert failures_recorded("login.failed") == attempts
    assert verify_chain().ok


def test_refused_form_posts_without_csrf_fold_too():
    client = Client(enforce_csrf_checks=True)
    for _ in range(50):
        assert client.post("/login/", {"username": "x", "password": "y"}).status_code == 403
    assert AuditEvent.objects.count() == 1
    flush_failure_windows(after_the_window())
    assert failures_recorded("http.post") == 50


@override_settings(AUDIT_FAILURE_WINDOW=0)
def test_a_zero_window_records_every_failure():
    for _ in range(5):
        bogus_token_from("203.0.113.5")
    assert AuditEvent.objects.filter(action="api_token.rejected").count() == 5


def test_identical_failures_in_four_processes_fold_into_one_window_on_sqlite(tmp_path):
    report = json.loads(race_failures(portal_env(f"sqlite:///{tmp_path / 'portal.sqlite3'}")))
    assert report["before_flush"] == 1
    assert [d.get("count") for d in report["details"]] == [None, 400]
    assert report["chain_ok"] is True
