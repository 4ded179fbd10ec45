"""Re-encrypt every secret stored at rest under the primary key (elastickv_admin.lib.crypto).

Every model field that holds ``crypto.encrypt`` output is listed in ENCRYPTED_FIELDS; a test
scans the database for Fernet ciphertext outside them, so a new one cannot be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.db import transaction

from audit.context import Actor
from audit.service import record_event
from elastickv_admin.lib import crypto

# (app label, model, field)
ENCRYPTED_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("accounts", "TOTPDevice", "encrypted_key"),
    ("cluster", "NodeTokenRecord", "ciphertext"),
)


@dataclass(frozen=True)
class Reencrypted:
    counts: dict[str, int]  # "app.Model.field" -> values rewritten

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def do_reencrypt_secrets(actor: Actor) -> Reencrypted:
    """Decrypt each stored secret with whichever configured key wrote it and encrypt it
    under ELASTICKV_ADMIN_SECRETS_KEY, all in one transaction (with its audit event). Raises
    crypto.InvalidToken, changing nothing, if some value none of the keys can read."""
    counts: dict[str, int] = {}
    with transaction.atomic():
        for app_label, model_name, field in ENCRYPTED_FIELDS:
            model = apps.get_model(app_label, model_name)
            rows = model.objects.select_for_update().exclude(**{field: ""})
            done = 0
            for pk, ciphertext in rows.values_list("pk", field):
                model.objects.filter(pk=pk).update(**{field: crypto.reencrypt(ciphertext)})
                done += 1
            counts[f"{app_label}.{model_name}.{field}"] = done
        record_event(
            "secrets.reencrypted",
            target="secrets at rest",
            details={"values": counts},
            actor=actor,
        )
    return Reencrypted(counts)
