"""The HMAC chain: audit_verify names the first broken event after an edit, a deletion or a
reorder, and counts the events otherwise; pruning keeps it verifiable."""

from __future__ import annotations

import itertools
import json
import logging
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditChain, AuditEvent
from audit.service import record_event

pytestmark = pytest.mark.django_db


def verify() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def broken() -> str:
    with pytest.raises(CommandError) as exc:
        verify()
    return str(exc.value)


@pytest.fixture
def ten_events():
    return [record_event("test.event", target=f"t{i}", details={"i": i}) for i in range(10)]


def sql(statement: str, *params: Any) -> None:
    # Tampering goes around the ORM, as someone with database access would.
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_chain_verifies_and_counts_its_events(ten_events):
    assert verify() == "audit chain OK: 10 events verified\n"


def test_each_event_links_to_the_previous_mac(ten_events):
    events = list(AuditEvent.objects.order_by("seq"))
    assert events[0].prev_mac == "0" * 64
    assert all(b.prev_mac == a.mac for a, b in itertools.pairwise(events))
    assert AuditChain.objects.get().head_mac == events[-1].mac


def test_an_edited_event_is_named(ten_events):
    sql("UPDATE audit_auditevent SET target = 'innocent' WHERE seq = 4")
    assert "broken at event #4" in broken()
    assert "edited" in broken()


def test_an_edited_detail_is_named(ten_events):
    sql("UPDATE audit_auditevent SET details = %s WHERE seq = 7", json.dumps({"i": 70}))
    assert "broken at event #7" in broken()


def test_a_deleted_event_is_named_by_the_one_after_it(ten_events):
    sql("DELETE FROM audit_auditevent WHERE seq = 5")
    message = broken()
    assert "broken at event #6" in message
    assert "expected event #5" in message


def test_a_deleted_last_event_no_longer_meets_the_chain_head(ten_events):
    sql("DELETE FROM audit_auditevent WHERE seq = 10")
    assert "events at the end deleted" in broken()


def test_reordered_events_are_named(ten_events):
    # Swap the contents of #3 and #4 (each row keeps a valid MAC of its own content).
    rows = {e.seq: e for e in AuditEvent.objects.filter(seq__in=(3, 4))}
    for seq, other in ((3, rows[4]), (4, rows[3])):
        sql(
            "UPDATE audit_auditevent SET target = %s, details = %s, prev_mac = %s, mac = %s, "
            "time = %s WHERE seq = %s",
            other.target,
            json.dumps(other.details),
            other.prev_mac,
            other.mac,
            other.time,
            seq,
        )
    assert "broken at event #3" in broken()


def test_a_chain_rewritten_without_the_key_fails(ten_events):
    # A forger recomputing MACs with a guessed key still fails at the first event.
    import hashlib
    import hmac as hmac_module

    first = AuditEvent.objects.get(seq=1)
    first.target = "rewritten"
    forged = hmac_module.new(b"guess", first.prev_mac.encode(), hashlib.sha256).hexdigest()
    sql("UPDATE audit_auditevent SET target = 'rewritten', mac = %s WHERE seq = 1", forged)
    assert "broken at event #1" in broken()


def test_prune_records_what_it_pruned_and_the_rest_still_verifies(ten_events):
    AuditEvent.objects.filter(seq__lte=6).update(time=timezone.now() - timedelta(days=40))
    out = StringIO()
    call_command("audit_prune", "--days", "30", stdout=out)
    assert "pruned 6 events" in out.getvalue()
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == [
        7,
        8,
        9,
        10,
        11,
    ]
    event = AuditEvent.objects.get(action="audit.pruned")
    assert event.details["events"] == 6
    assert event.details["kept_from_seq"] == 7
    assert verify() == "audit chain OK: 5 events verified\n"
    # A second prune with nothing to do still verifies, and so does the next event.
    call_command("audit_prune", "--days", "30", stdout=StringIO())
    record_event("test.after")
    assert verify() == "audit chain OK: 7 events verified\n"


def test_after_a_prune_deleting_the_first_kept_event_is_still_detected(ten_events):
    AuditEvent.objects.filter(seq__lte=3).update(time=timezone.now() - timedelta(days=40))
    call_command("audit_prune", "--days", "30", stdout=StringIO())
    sql("DELETE FROM audit_auditevent WHERE seq = 4")
    assert "broken at event #5" in broken()


def test_moving_the_anchor_to_hide_deletions_is_detected(ten_events):
    AuditEvent.objects.filter(seq__lte=3).update(time=timezone.now() - timedelta(days=40))
    call_command("audit_prune", "--days", "30", stdout=StringIO())
    mac4 = AuditEvent.objects.get(seq=4).mac
    sql("DELETE FROM audit_auditevent WHERE seq = 4")
    sql("UPDATE audit_auditchain SET anchor_seq = 5, anchor_mac = %s", mac4)
    assert "anchor does not match the latest prune event" in broken()


def test_prune_uses_the_retention_setting_and_zero_keeps_everything(ten_events):
    out = StringIO()
    call_command("audit_prune", stdout=out)
    assert "keep everything" in out.getvalue()
    assert AuditEvent.objects.count() == 10


def test_every_event_is_one_json_line_on_the_log_stream_once_committed(
    caplog, django_capture_on_commit_callbacks
):
    with (
        caplog.at_level(logging.INFO, logger="elastickv_admin.audit"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        record_event("test.logged", target="x", details={"a": 1})
    [line] = [r.getMessage() for r in caplog.records if r.name == "elastickv_admin.audit"]
    parsed = json.loads(line)
    assert parsed["action"] == "test.logged"
    assert parsed["details"] == {"a": 1}
    assert parsed["seq"] == AuditEvent.objects.get().seq


def test_secret_looking_detail_keys_are_never_written():
    event = record_event("test.secret", details={"password": "hunter2", "nested": {"token": "t"}})
    assert event.details == {"password": "[redacted]", "nested": {"token": "[redacted]"}}
