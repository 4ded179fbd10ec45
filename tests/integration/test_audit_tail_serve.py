"""The audit anchor across real processes: `serve` (daphne) writes events and moves the anchor
in the shared data directory; `manage.py audit_verify`, another process, checks the tail
against it and exits 1 with a message, never a traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NO_NODES, portal_login

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _audit_verify(portal: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "audit_verify"],
        cwd=ROOT,
        env=portal.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _db(portal: Any) -> sqlite3.Connection:
    return sqlite3.connect(Path(portal.env["ELASTICKV_ADMIN_DATA_DIR"]) / "portal.sqlite3")


def test_a_tail_cut_behind_the_running_portal_fails_audit_verify_with_exit_1(portal_factory):
    portal = portal_factory(NO_NODES)
    # Successful sign-ins: each is its own event (identical failures would fold into one).
    for i in range(3):
        portal_login(portal, portal.admin_password, f"203.0.113.{i}")
    with _db(portal) as db:
        [(last,)] = db.execute("SELECT max(seq) FROM audit_auditevent").fetchall()
    anchor = Path(portal.env["ELASTICKV_ADMIN_DATA_DIR"]) / "audit-anchor"
    clean = _audit_verify(portal)
    assert clean.returncode == 0, clean.stderr
    assert f"tail reaches the anchor at {anchor} (#{last})" in clean.stdout

    with _db(portal) as db:
        [(mac,)] = db.execute("SELECT mac FROM audit_auditevent WHERE seq = ?", (last - 2,))
        db.execute("DELETE FROM audit_auditevent WHERE seq > ?", (last - 2,))
        db.execute("UPDATE audit_auditchain SET head_seq = ?, head_mac = ?", (last - 2, mac))
    cut = _audit_verify(portal)
    assert cut.returncode == 1
    assert (
        f"events {last - 1}-{last} missing at the tail: the anchor at {anchor} records seq {last}"
    ) in cut.stderr
    assert "Traceback" not in cut.stderr

    with _db(portal) as db:
        db.execute("DELETE FROM audit_auditchain")
    headless = _audit_verify(portal)
    assert headless.returncode == 1
    assert "the chain head row (audit_auditchain id 1) is missing" in headless.stderr
    assert "Traceback" not in headless.stderr
