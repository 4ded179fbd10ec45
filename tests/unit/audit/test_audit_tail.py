"""Attacks on the audit chain's tail and on audit_verify itself: a tail cut with the head row
rewritten, an emptied table, an unreadable row, a missing head. The anchor file and copies of
the log stream (audit/anchor.py) see what the table alone cannot."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.anchor import read_anchor
from audit.models import GENESIS_MAC, AuditEvent
from audit.service import record_event

pytestmark = pytest.mark.django_db


def sql(statement: str, *params: Any) -> None:
    # Tampering goes around the ORM, as someone with database access would.
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def verify(*args: str) -> str:
    out = StringIO()
    call_command("audit_verify", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def broken(*args: str) -> str:
    with pytest.raises(CommandError) as exc:
        verify(*args)
    return str(exc.value)


@pytest.fixture
def siem_log(tmp_path: Path, caplog: Any, django_capture_on_commit_callbacks: Any) -> Any:
    """Committed events, each one JSON line on the audit log stream, as a SIEM keeps them."""
    path = tmp_path / "siem.jsonl"

    def write(count: int, action: str = "test.event") -> Path:
        with (
            caplog.at_level(logging.INFO, logger="elastickv_admin.audit"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            for i in range(count):
                record_event(action, target=f"t{i}", details={"i": i})
        lines = [r.getMessage() for r in caplog.records if r.name == "elastickv_admin.audit"]
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


def anchor() -> Path:
    return Path(settings.AUDIT_ANCHOR_FILE)


def cut_tail_and_rewrite_head(keep: int) -> None:
    mac = AuditEvent.objects.get(seq=keep).mac
    sql("DELETE FROM audit_auditevent WHERE seq > %s", keep)
    sql("UPDATE audit_auditchain SET head_seq = %s, head_mac = %s", keep, mac)


def test_a_clean_chain_verifies_against_its_anchor_and_the_log(siem_log):
    log = siem_log(10)
    out = verify("--log", str(log))
    assert out.startswith("audit chain OK: 10 events verified\n")
    assert f"tail reaches the anchor at {anchor()} (#10)" in out
    stored = read_anchor(anchor())
    assert stored is not None
    assert (stored.seq, stored.mac) == (10, AuditEvent.objects.get(seq=10).mac)
    line = json.loads(log.read_text().splitlines()[-1])
    assert (line["seq"], line["mac"]) == (10, stored.mac)


def test_deleting_the_tail_and_rewriting_the_head_is_detected_by_the_anchor(siem_log):
    siem_log(10)
    cut_tail_and_rewrite_head(7)
    assert (
        f"events 8-10 missing at the tail: the anchor at {anchor()} records seq 10 "
        "(the table ends at #7)"
    ) in broken()


def test_truncating_the_table_and_resetting_the_head_is_detected_by_the_anchor(siem_log):
    siem_log(10)
    sql("DELETE FROM audit_auditevent")
    sql("UPDATE audit_auditchain SET head_seq = 0, head_mac = %s", GENESIS_MAC)
    assert f"events 1-10 missing at the tail: the anchor at {anchor()} records seq 10" in (broken())


def test_a_cut_tail_is_detected_by_the_siem_log_without_the_anchor_file(siem_log):
    log = siem_log(10)
    anchor().unlink()
    cut_tail_and_rewrite_head(9)
    assert f"event 10 missing at the tail: the audit log {log} (line 10) records seq 10" in (
        broken("--log", str(log))
    )


def test_a_tail_cut_and_refilled_by_new_events_is_still_detected(siem_log):
    siem_log(10)
    cut_tail_and_rewrite_head(7)
    siem_log(5, "test.after")  # new events 8-12 reuse the cut events' numbers
    stored = read_anchor(anchor())
    assert stored is not None
    assert stored.seq == 10  # the anchor did not follow the rewound chain
    assert f"event #10 is not the one the anchor at {anchor()} records" in broken()


def test_a_forged_anchor_file_is_refused(siem_log):
    siem_log(3)
    data = json.loads(anchor().read_text())
    anchor().write_text(json.dumps({**data, "seq": 99}))
    assert f"the anchor at {anchor()} is not signed with this audit key" in broken()


def test_a_forged_siem_line_is_refused(siem_log):
    log = siem_log(3)
    lines = log.read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["seq"] = 50
    log.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    assert f"{log} line 4: event #50 does not carry its own MAC" in broken("--log", str(log))


def test_an_explicit_anchor_that_does_not_exist_is_an_error(tmp_path):
    record_event("test.event")
    assert f"no anchor file at {tmp_path / 'nope'}" in broken("--anchor", str(tmp_path / "nope"))


def test_a_row_that_cannot_be_read_is_named_without_a_traceback(siem_log):
    siem_log(6)
    sql("UPDATE audit_auditevent SET time = 'not a time' WHERE seq = 4")
    message = broken()
    assert "audit chain broken at event #4: the row cannot be read" in message


def test_a_missing_chain_head_is_named_without_a_traceback(siem_log):
    siem_log(3)
    sql("DELETE FROM audit_auditchain")
    assert "the chain head row (audit_auditchain id 1) is missing" in broken()


def test_pruning_raises_no_false_alarm_from_the_anchor_or_the_log(
    siem_log, django_capture_on_commit_callbacks
):
    log = siem_log(10)
    AuditEvent.objects.filter(seq__lte=6).update(time=timezone.now() - timedelta(days=40))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("audit_prune", "--days", "30", stdout=StringIO())
    out = verify("--log", str(log))
    assert out.startswith("audit chain OK: 5 events verified\n")
    assert "(#11)" in out  # the anchor followed the prune event
    # Pruning every event leaves only the new prune event, which the anchor follows too.
    AuditEvent.objects.update(time=timezone.now() - timedelta(days=40))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("audit_prune", "--days", "30", stdout=StringIO())
    out = verify("--log", str(log))
    assert out.startswith("audit chain OK: 1 events verified\n")
    assert f"tail reaches the anchor at {anchor()} (#12)" in out
