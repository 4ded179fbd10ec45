"""Several portal processes start a node token rotation at the same instant: exactly one may
win. Used by the SQLite (unit) and PostgreSQL (services) tiers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from cluster.node_token import ensure_node_token
ensure_node_token()
"""
STARTER = """
import sys, time
import django
django.setup()
from audit.context import command_context
from cluster.node_token import NodeTokenRefused, do_start_rotation
name, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
with command_context(name):
    try:
        do_start_rotation(name, None if name.endswith(("0", "2")) else "pasted-by-" + name + "-0123456789")
        print("started")
    except NodeTokenRefused as exc:
        print("refused: " + str(exc))
"""


def portal_env(database_url: str, token_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "ELASTICKV_ADMIN_NODES": "127.0.0.1:1",
        "ELASTICKV_ADMIN_NODE_TOKEN_FILE": str(token_file),
        "ELASTICKV_ADMIN_INSECURE_NO_AUTH": "false",
    }


def race_starts(env: dict[str, str], processes: int = 4, *, setup: bool = True) -> list[str]:
    """Each process's outcome: "started" or "refused: <reason>"."""
    if setup:
        subprocess.run([sys.executable, "-c", SETUP], cwd=ROOT, env=env, check=True, timeout=120)
    start_at = time.time() + 3  # together, after interpreter start-up
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, f"portal-{n}", str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    outcomes = []
    for starter in starters:
        out, err = starter.communicate(timeout=120)
        assert starter.returncode == 0, err
        outcomes.append(out.strip().splitlines()[-1])
    return outcomes
