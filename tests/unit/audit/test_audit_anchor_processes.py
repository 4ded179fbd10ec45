"""Several portal processes sharing one data directory (here: the SQLite file) append at once:
the anchor file ends at the chain's last event, and audit_verify in another process agrees.
PostgreSQL: tests/services/test_audit_chain_postgres.py."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from audit.anchor import read_anchor

ROOT = Path(__file__).resolve().parents[3]
PER_PROCESS = 200
WRITER = """
import sys, time
import django
django.setup()
from audit.context import command_context
from audit.service import record_event
name, start_at, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
with command_context(name):
    for i in range(count):
        record_event("test.concurrent", target=name, details={"i": i})
"""


def test_processes_appending_at_once_leave_the_anchor_at_the_last_event(tmp_path):
    anchor = tmp_path / "audit-anchor"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "ELASTICKV_ADMIN_AUDIT_ANCHOR_FILE": str(anchor),
        "ELASTICKV_ADMIN_NODES": "127.0.0.1:1",
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert manage("migrate", "--verbosity", "0").returncode == 0
    start_at = time.time() + 3  # all begin together, after interpreter start-up
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(start_at), str(PER_PROCESS)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("portal-a", "portal-b", "portal-c")
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
        assert "audit anchor" not in stderr  # never refused to advance
    with sqlite3.connect(tmp_path / "portal.sqlite3") as db:
        head = db.execute("SELECT head_seq, head_mac FROM audit_auditchain").fetchone()
        order = [t for (t,) in db.execute("SELECT target FROM audit_auditevent ORDER BY seq")]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 2  # really concurrent
    assert head[0] >= 3 * PER_PROCESS
    stored = read_anchor(anchor, os.environ["ELASTICKV_ADMIN_AUDIT_KEY"])
    assert stored is not None
    assert (stored.seq, stored.mac) == head
    verified = manage("audit_verify")
    assert verified.returncode == 0, verified.stderr
    assert f"tail reaches the anchor at {anchor} (#{head[0]})" in verified.stdout
