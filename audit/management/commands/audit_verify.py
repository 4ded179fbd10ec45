"""Verify the audit chain: exit 0 and print the number of events verified, or exit 1 and
name the first broken event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's HMAC chain (edits, deletions, reorders)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain()
        if not result.ok:
            raise CommandError(
                f"audit chain broken at event #{result.broken_seq}: {result.reason} "
                f"({result.verified} events verified before it)"
            )
        self.stdout.write(f"audit chain OK: {result.verified} events verified")
