"""`manage.py reencrypt_secrets`: move every secret stored at rest to the primary key.

Key rotation: make the new key ELASTICKV_ADMIN_SECRETS_KEY and list the old one in
ELASTICKV_ADMIN_SECRETS_OLD_KEYS on every portal process, run this once, then remove the
old key. README "Secrets at rest".
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.context import command_context
from audit.service import AuditWriteError
from elastickv_admin.lib import crypto
from elastickv_admin.reencrypt import do_reencrypt_secrets


class Command(BaseCommand):
    help = "Re-encrypt the TOTP seeds and node tokens under ELASTICKV_ADMIN_SECRETS_KEY."

    def handle(self, *args: Any, **options: Any) -> None:
        with command_context("reencrypt_secrets") as context:
            try:
                result = do_reencrypt_secrets(context.actor)
            except crypto.InvalidToken:
                raise CommandError(
                    "a stored secret cannot be decrypted with ELASTICKV_ADMIN_SECRETS_KEY or "
                    "any key in ELASTICKV_ADMIN_SECRETS_OLD_KEYS; nothing was changed. Add "
                    "the key that wrote it to ELASTICKV_ADMIN_SECRETS_OLD_KEYS."
                ) from None
            except AuditWriteError as exc:
                raise CommandError(str(exc)) from None
        for name, count in result.counts.items():
            self.stdout.write(f"{name}: {count} re-encrypted")
        self.stdout.write(
            f"{result.total} secret(s) now under ELASTICKV_ADMIN_SECRETS_KEY; the keys in "
            "ELASTICKV_ADMIN_SECRETS_OLD_KEYS can be removed (restart the portal processes)."
        )
