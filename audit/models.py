"""The append-only audit log and the head of its HMAC chain."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.functions import Cast, Concat, Upper

GENESIS_MAC = "0" * 64
# Between the fields of the search text: a term does not run from one field into the next.
SEARCH_SEPARATOR = "\x1f"


def search_text() -> Upper:
    """Every field the viewer's free text looks in, upper-cased, in one string."""
    parts: list[Any] = []
    for name in ("target", "actor", "action", "source_ip"):
        parts += [models.F(name), models.Value(SEARCH_SEPARATOR)]
    parts.append(Cast(models.F("details"), models.TextField()))
    return Upper(Concat(*parts, output_field=models.TextField()))


class Outcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
    ERROR = "error"


class AuditEvent(models.Model):
    """One event. ``seq`` is the chain position (and the key the viewer pages on);
    ``mac`` = HMAC(key, prev_mac || canonical(event)), see audit/chain.py."""

    seq = models.BigIntegerField(primary_key=True)
    time = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, blank=True)
    source_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    details = models.JSONField(default=dict, blank=True)
    prev_mac = models.CharField(max_length=64)
    mac = models.CharField(max_length=64)
    # Which audit key made mac (crypto.key_id), so the key can rotate; "" for events from
    # before key ids (checked against every configured key). Not part of the chain: a
    # changed id only points verification at a key that does not match.
    key_id = models.CharField(max_length=16, blank=True, default="")
    # Stored, so PostgreSQL can keep a trigram index on it (migration 0003): a rare word is
    # found without reading the table. Not part of the chain (canonical_fields).
    search = models.GeneratedField(
        expression=search_text(), output_field=models.TextField(), db_persist=True
    )

    class Meta:
        ordering = ("-seq",)
        indexes = (
            # Each viewer filter walks its own index newest-first (keyset on seq).
            models.Index(fields=("actor", "seq"), name="audit_actor_seq"),
            models.Index(fields=("action", "seq"), name="audit_action_seq"),
            models.Index(fields=("outcome", "seq"), name="audit_outcome_seq"),
            models.Index(fields=("request_id",), name="audit_request_id"),
        )

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome}"

    def canonical_fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time.isoformat(timespec="microseconds"),
            "actor": self.actor,
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "details": self.details,
        }


class AuditChain(models.Model):
    """The single row writers lock (SELECT ... FOR UPDATE) to append: the last event's
    seq and MAC, and the anchor where the kept chain starts after a prune."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    head_seq = models.BigIntegerField(default=0)
    head_mac = models.CharField(max_length=64, default=GENESIS_MAC)
    anchor_seq = models.BigIntegerField(default=1)
    anchor_mac = models.CharField(max_length=64, default=GENESIS_MAC)

    def __str__(self) -> str:
        return f"audit chain head #{self.head_seq}"


class FailureWindow(models.Model):
    """Repeated identical failures being folded into one event (audit/failures.py): one row
    per (action, source address, actor, reason) while its window is open. In the database,
    so every portal process folds into the same window."""

    key = models.CharField(max_length=64, unique=True)  # sha256 of the four parts
    action = models.CharField(max_length=64)
    source_ip = models.CharField(max_length=45, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    target = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    opened = models.DateTimeField(db_index=True)
    last = models.DateTimeField()
    failures = models.PositiveIntegerField(default=0)  # in this window, the first included
    first_seq = models.BigIntegerField(null=True)  # the event the first failure wrote

    def __str__(self) -> str:
        return f"{self.action} from {self.source_ip}: {self.failures}"
