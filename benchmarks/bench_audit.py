"""Audit log benchmark on PostgreSQL: printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_audit.py [--events 1000000] [--writes 2000]

Starts a private PostgreSQL in a temporary directory (as scripts/test.sh does), or uses
DATABASE_URL when it is set, and reports:

1. the cost of one audit write (``record_event``: lock the chain head, MAC, insert, move
   the head, then move the anchor file; one transaction per event, as a request makes it)
   with a short chain, and the same without the anchor file (audit/anchor.py);
2. after loading a valid chain of --events events (generated with real MACs, COPY'd in),
   the auditor's viewer page time for the first page, a deep keyset page and each filter,
   rendered through the real middleware and template;
3. the write cost again at that size, a streamed CSV export of one actor's events, and
   ``audit_verify`` over the whole chain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ACTORS = [f"user{i:02d}" for i in range(20)] + ["anonymous", "cli:root"]
ACTIONS = [
    ("http.get", 0),  # never written (reads are not events); keeps the list honest
    ("login", 20),
    ("logout", 15),
    ("login.failed", 8),
    ("api_token.used", 30),
    ("websocket.subscribe", 15),
    ("permission.denied", 2),
    ("settings.changed", 1),
    ("user.roles_changed", 1),
    ("http.post", 8),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server; yields its URL."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        sys.exit("PostgreSQL not found (apt-get install postgresql) and DATABASE_URL not set")
    bin_dir = bins[-1].parent
    work = Path(tempfile.mkdtemp(prefix="ekv-bench-pg."))
    work.chmod(0o755)
    as_pg: list[str] = []
    if os.getuid() == 0:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
        shutil.chown(work, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    data = work / "pg"
    port = free_port()
    subprocess.run(
        [
            *as_pg,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "ekv",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c shared_buffers=256MB"
    subprocess.run(
        [
            *as_pg,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(work / "pg.log"),
            "-w",
            "-o",
            options,
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                str(bin_dir / "psql"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "ekv",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE ekv_bench",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgres://ekv@127.0.0.1:{port}/ekv_bench"
    finally:
        subprocess.run(
            [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)


def setup_django(database_url: str, data_dir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "elastickv_admin.settings",
            "DATABASE_URL": database_url,
            "ELASTICKV_ADMIN_DATA_DIR": str(data_dir),
            "ELASTICKV_ADMIN_STATIC_FINDERS": "true",
            "ELASTICKV_ADMIN_NODES": "127.0.0.1:1",
            "ELASTICKV_ADMIN_INSECURE_NO_AUTH": "true",
            "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
            "ELASTICKV_ADMIN_AUDIT_KEY": "bench-audit-key-0123456789abcdef",
            "ELASTICKV_ADMIN_TOKEN_HASH_KEY": "bench-token-key-0123456789abcdef",
            "ELASTICKV_ADMIN_SECRETS_KEY": "bench-secrets-key-0123456789abcdef",
            "ALLOWED_HOSTS": "testserver",
            "LOG_LEVEL": "WARNING",
        }
    )
    import logging

    import django

    django.setup()
    logging.getLogger("elastickv_admin.audit").setLevel(logging.WARNING)  # no JSON lines here
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def time_writes(count: int, *, anchor: bool = True) -> float:
    """Mean milliseconds per record_event, each in its own transaction; ``anchor=False``
    leaves the anchor file alone (what the write cost before it existed)."""
    from unittest import mock

    from audit import service
    from audit.context import AuditContext, audit_context
    from audit.service import record_event

    if not anchor:
        with mock.patch.object(service, "advance_anchor", return_value=None):
            return time_writes(count)

    context = AuditContext(
        request_id="bench", actor="bench", source_ip="10.0.0.1", user_agent="bench"
    )
    with audit_context(context):
        started = time.perf_counter()
        for i in range(count):
            record_event("bench.write", target=f"t{i}", details={"i": i})
        elapsed = time.perf_counter() - started
    return elapsed * 1000 / count


def load_chain(total: int, seed: int) -> int:
    """Append events with real MACs until the chain holds ``total``; COPY, then move the head."""
    from django.db import connection, transaction

    from audit.chain import audit_key, compute_mac
    from audit.models import AuditChain

    rng = random.Random(seed)
    names = [a for a, w in ACTIONS if w]
    weights = [w for _, w in ACTIONS if w]
    key = audit_key()
    with transaction.atomic():
        chain = AuditChain.objects.select_for_update().get(pk=1)
        seq, prev = chain.head_seq, chain.head_mac
        todo = total - seq
        start = datetime.now(UTC) - timedelta(days=90)
        step = timedelta(days=90) / max(todo, 1)
        columns = (
            "seq, time, actor, source_ip, user_agent, request_id, action, target, outcome, "
            "details, prev_mac, mac"
        )
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY audit_auditevent ({columns}) FROM STDIN") as copy,
        ):
            for n in range(todo):
                seq += 1
                action = rng.choices(names, weights)[0]
                actor = rng.choice(ACTORS)
                outcome = (
                    "denied"
                    if action == "permission.denied"
                    else "failure"
                    if action == "login.failed"
                    else "success"
                )
                fields = {
                    "seq": seq,
                    "time": (start + step * n).isoformat(timespec="microseconds"),
                    "actor": actor,
                    "source_ip": f"10.{rng.randrange(256)}.0.{rng.randrange(1, 255)}",
                    "user_agent": "Mozilla/5.0 (bench)",
                    "request_id": f"{rng.getrandbits(128):032x}",
                    "action": action,
                    "target": f"user:{actor}"
                    if action.startswith(("login", "logout"))
                    else f"/api/keyviz/matrix?n={n}",
                    "outcome": outcome,
                    "details": {"n": n, "note": f"synthetic event {n}"},
                }
                mac = compute_mac(key, prev, fields)
                copy.write_row(
                    (
                        seq,
                        fields["time"],
                        actor,
                        fields["source_ip"],
                        fields["user_agent"],
                        fields["request_id"],
                        action,
                        fields["target"],
                        outcome,
                        json.dumps(fields["details"]),
                        prev,
                        mac,
                    )
                )
                prev = mac
        AuditChain.objects.filter(pk=1).update(head_seq=seq, head_mac=prev)
    with connection.cursor() as cursor:
        # What autovacuum would do after a bulk load, done now so it does not run mid-figure.
        cursor.execute("VACUUM (ANALYZE) audit_auditevent")
    return todo


def median_ms(action: Callable[[], Any], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="ekv-bench-data."))
    url = os.environ.get("DATABASE_URL")
    context = private_postgres() if not url else nullcontext(url)
    try:
        with context as database_url:
            run(database_url, data_dir, args)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(database_url: str, data_dir: Path, args: argparse.Namespace) -> None:
    setup_django(database_url, data_dir)
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client

    from audit.models import AuditEvent
    from audit.query import AuditFilters, export_sync

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print(
        f"audit benchmark: PostgreSQL {server}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )

    print(f"\n1. audit write, short chain ({args.writes} events, one transaction each)")
    print(f"   record_event: {time_writes(args.writes):.3f} ms/event")
    no_anchor = time_writes(args.writes, anchor=False)
    print(f"   record_event without the anchor file: {no_anchor:.3f} ms/event")

    started = time.perf_counter()
    loaded = load_chain(args.events, args.seed)
    print(
        f"\n2. loaded {loaded:,} events with real MACs in {time.perf_counter() - started:.1f} s "
        f"(chain now {AuditEvent.objects.count():,} events)"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('audit_auditevent'))")
        print(f"   table + indexes: {cursor.fetchone()[0]}")

    auditor = User.objects.create_user("bench-auditor")
    auditor.groups.add(Group.objects.get(name="auditor"))
    client = Client()
    client.force_login(auditor)
    mid = args.events // 2
    rare = (
        AuditEvent.objects.filter(action="settings.changed")
        .order_by("-seq")
        .values_list("request_id", flat=True)[200]
    )
    day_from, day_to = (
        (datetime.now(UTC) - timedelta(days=d)).strftime("%Y-%m-%dT%H:%M") for d in (45, 44)
    )
    pages = [
        ("first page, no filter", "/audit/"),
        ("deep page (before=middle)", f"/audit/?before={mid}"),
        ("actor=user07", "/audit/?actor=user07"),
        ("action=permission.denied (2%)", "/audit/?action=permission.denied"),
        ("action=login* (prefix)", "/audit/?action=login*"),
        ("outcome=denied", "/audit/?outcome=denied"),
        ("request id (one event)", f"/audit/?request_id={rare}"),
        ("time range: one day, 45 days back", f"/audit/?from={day_from}&to={day_to}"),
        ("actor + action + outcome", "/audit/?actor=user03&action=login.failed&outcome=failure"),
        ('free text, common ("synthetic event 99")', "/audit/?q=synthetic+event+99"),
        ("free text, rare (old events only)", "/audit/?q=synthetic+event+12345"),
    ]
    print(
        f"\n   viewer page time at {AuditEvent.objects.count():,} events "
        "(median of 5, full page render through the middleware):"
    )
    for label, path in pages:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        shown = response.content.count(b'<td class="num"><a href="/audit/')
        elapsed = median_ms(partial(client.get, path))
        print(f"   {label:44} {elapsed:8.1f} ms  ({shown} rows)")

    print("\n3. at this size")
    print(f"   record_event: {time_writes(args.writes // 2):.3f} ms/event")
    filters = AuditFilters.parse({"actor": "user11"})
    started = time.perf_counter()
    size = rows = 0
    for piece in export_sync(filters, "csv"):
        size += len(piece)
        rows += piece.count("\n")
    elapsed = time.perf_counter() - started
    print(
        f"   CSV export, actor=user11: {rows - 1:,} rows, {size / 1e6:.1f} MB in {elapsed:.1f} s "
        f"({(rows - 1) / elapsed:,.0f} rows/s)"
    )
    from audit.chain import verify_chain

    started = time.perf_counter()
    result = verify_chain()
    elapsed = time.perf_counter() - started
    print(
        f"   audit_verify: ok={result.ok}, {result.verified:,} events in {elapsed:.1f} s "
        f"({result.verified / elapsed:,.0f} events/s)"
    )


if __name__ == "__main__":
    main()
