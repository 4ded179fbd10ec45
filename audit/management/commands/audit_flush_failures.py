"""Write the summary events of closed failure windows (audit/failures.py) now, instead of at
the next failure; run it from the same timer as audit_prune."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.context import command_context
from audit.failures import flush_failure_windows


class Command(BaseCommand):
    help = "Write the summaries of repeated failures whose window has closed."

    def handle(self, *args: Any, **options: Any) -> None:
        with command_context("audit_flush_failures"):
            total = flush_failure_windows(batch=None)
        self.stdout.write(f"{total} summary event(s) written")
