"""Django's createsuperuser, audited: the new superuser (who holds every role) is written
to the audit log in the same transaction."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from accounts.actions import do_record_superuser_created
from audit.context import command_context


class Command(createsuperuser.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        database = options.get("database") or "default"
        with command_context("createsuperuser") as context, transaction.atomic(using=database):
            before = User.objects.using(database).aggregate(m=Max("pk"))["m"] or 0
            super().handle(*args, **options)
            for user in User.objects.using(database).filter(pk__gt=before, is_superuser=True):
                do_record_superuser_created(context.actor, user, via="createsuperuser")
