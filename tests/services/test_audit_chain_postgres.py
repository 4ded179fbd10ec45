"""Two portal processes writing audit events at once into one PostgreSQL keep one valid
chain: writers serialize on the locked chain head row."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from tests.helpers import require

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
PER_PROCESS = 150
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


def test_two_processes_writing_at_once_keep_one_valid_chain():
    require(connection.vendor == "postgresql", "DATABASE_URL does not point at PostgreSQL")
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    start_at = time.time() + 3  # both begin together, after interpreter start-up
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(start_at), str(PER_PROCESS)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("portal-a", "portal-b")
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
    assert AuditEvent.objects.count() == 2 * PER_PROCESS
    for name in ("portal-a", "portal-b"):
        assert AuditEvent.objects.filter(target=name).count() == PER_PROCESS
    # The writes interleaved (they really were concurrent) and the chain is still one.
    order = list(AuditEvent.objects.order_by("seq").values_list("target", flat=True))
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 1
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue() == f"audit chain OK: {2 * PER_PROCESS} events verified\n"
