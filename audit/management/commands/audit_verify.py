"""Verify the audit chain: exit 0 and print the number of events verified, or exit 1 and
name every problem found: the first broken event, a tail cut below the anchor file or a
copy of the audit log stream, an anchor that cannot be believed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.anchor import (
    AnchorError,
    anchor_path,
    log_problems,
    read_anchor,
    read_log,
    tail_problems,
)
from audit.chain import verify_chain


class Command(BaseCommand):
    help = (
        "Verify the audit log's HMAC chain (edits, deletions, reorders) and its tail against "
        "the anchor file and copies of the audit log stream."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--anchor",
            type=Path,
            help="anchor file to check the tail against (default: ELASTICKV_ADMIN_AUDIT_ANCHOR_"
            "FILE, <dataDir>/audit-anchor, when it exists)",
        )
        parser.add_argument(
            "--log",
            type=Path,
            action="append",
            default=[],
            help="a copy of the audit log stream (JSON lines, e.g. from the SIEM); repeatable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems: list[str] = []
        confirmed: list[str] = []
        result = verify_chain()
        if not result.ok:
            where = f" at event #{result.broken_seq}" if result.broken_seq is not None else ""
            problems.append(
                f"audit chain broken{where}: {result.reason} "
                f"({result.verified} events verified before it)"
            )
        path: Path = options["anchor"] or anchor_path()
        try:
            anchor = read_anchor(path)
        except AnchorError as exc:
            problems.append(str(exc))
        else:
            if anchor is None and options["anchor"] is not None:
                problems.append(f"no anchor file at {path}")
            elif anchor is None:
                self.stderr.write(
                    f"no anchor file at {path}: the tail is checked only against the head row"
                )
            else:
                tail = tail_problems(anchor)
                problems += tail
                if not tail:
                    confirmed.append(f"tail reaches the anchor at {path} (#{anchor.seq})")
        for log in options["log"]:
            try:
                found = log_problems(read_log(log), log)
            except AnchorError as exc:
                found = [str(exc)]
            problems += found
            if not found:
                confirmed.append(f"every event of {log} still in the table matches it")
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(f"audit chain OK: {result.verified} events verified")
        for line in confirmed:
            self.stdout.write(line)
