"""Create a personal API token for USERNAME; prints only the token on stdout."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.actions import ActionRefused, do_create_api_token
from audit.context import command_context
from audit.service import AuditWriteError


class Command(BaseCommand):
    help = "Create an API token for a user and print it (only the token, on stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--expires-days", type=int, default=None)
        parser.add_argument(
            "--read-write", action="store_true", help="allow POST/PUT/DELETE (default read-only)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}")
        if not user.is_active:
            raise CommandError(f"user {user.username!r} is deactivated")
        with command_context("create_api_token") as context:
            try:
                created = do_create_api_token(
                    context.actor,
                    user,
                    options["name"],
                    expires_days=options["expires_days"],
                    read_only=not options["read_write"],
                )
            except (ActionRefused, AuditWriteError) as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(created.plaintext)
