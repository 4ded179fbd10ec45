"""Apply the audit retention: delete events older than the retention, record the prune as an
event, keep the chain verifiable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import get_site_settings
from audit.context import command_context
from audit.service import do_prune


class Command(BaseCommand):
    help = "Prune audit events older than the retention (Settings page, or --days)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="override the retention setting")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = (
            options["days"]
            if options["days"] is not None
            else (get_site_settings().audit_retention_days)
        )
        if days <= 0:
            if options["days"] is not None:
                raise CommandError("--days must be at least 1")
            self.stdout.write("audit retention is 0 (keep everything): nothing pruned")
            return
        before = timezone.now() - timedelta(days=days)
        with command_context("audit_prune") as context:
            result = do_prune(context.actor, before, dry_run=options["dry_run"])
        verb = "would prune" if options["dry_run"] else "pruned"
        self.stdout.write(
            f"{verb} {result.pruned} events older than {before:%Y-%m-%d %H:%M} UTC "
            f"(chain kept from #{result.kept_from_seq})"
        )
