"""Several portal processes fail identically at the same instant (bogus API tokens from one
address): one window, folded across processes. Used by the SQLite (unit) and PostgreSQL
(services) tiers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.node_token_race import ROOT

SETUP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
"""
FAILER = """
import sys, time
import django
django.setup()
from audit.context import AuditContext, audit_context, new_request_id
from audit.failures import record_failure
from audit.models import Outcome
failures, start_at = int(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
for _ in range(failures):
    context = AuditContext(request_id=new_request_id(), source_ip="203.0.113.5", actor="anonymous")
    with audit_context(context):
        record_failure(
            "api_token.rejected",
            reason="invalid API token",
            target="/api/keyviz/matrix",
            outcome=Outcome.DENIED,
            details={"reason": "invalid API token"},
        )
print("done")
"""
REPORT = """
import json
from datetime import timedelta
import django
django.setup()
from django.utils import timezone
from audit.chain import verify_chain
from audit.failures import flush_failure_windows, window_seconds
from audit.models import AuditEvent
before = AuditEvent.objects.count()
flush_failure_windows(timezone.now() + timedelta(seconds=window_seconds() + 1))
events = list(AuditEvent.objects.order_by("seq").values_list("details", flat=True))
print(json.dumps({"before_flush": before, "details": events, "chain_ok": verify_chain().ok}))
"""


def portal_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "ELASTICKV_ADMIN_NODES": "127.0.0.1:1",
    }


def race_failures(env: dict[str, str], processes: int = 4, failures: int = 100) -> str:
    """Every process records ``failures`` identical failures at once; returns the report:
    audit rows before the flush, every event's details after it, the chain's verdict."""
    subprocess.run([sys.executable, "-c", SETUP], cwd=ROOT, env=env, check=True, timeout=120)
    start_at = time.time() + 3  # together, after interpreter start-up
    failers = [
        subprocess.Popen(
            [sys.executable, "-c", FAILER, str(failures), str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for failer in failers:
        _, err = failer.communicate(timeout=300)
        assert failer.returncode == 0, err
    report = subprocess.run(
        [sys.executable, "-c", REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    return report.stdout.strip().splitlines()[-1]
