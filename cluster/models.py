"""The node bearer token(s) the portal presents to the nodes' Admin service, encrypted at
rest, and what the last probe of each node found (cluster/node_token.py changes them)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class NodeTokenHead(models.Model):
    """The one row every token change locks (SELECT ... FOR UPDATE) and whose ``version``
    it bumps: portal processes compare the version, cheaply, to learn that the tokens
    changed (cluster/node_token.py, DatabaseTokenStore)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"node token version {self.version}"


class NodeTokenRecord(models.Model):
    """One token: the current one, and during a rotation the next one. Only the Fernet
    ciphertext (elastickv_admin.lib.crypto) is stored; people see the fingerprint."""

    class Slot(models.TextChoices):
        CURRENT = "current"
        NEXT = "next"

    class Source(models.TextChoices):
        FILE = "file", "--nodeTokenFile"
        GENERATED = "generated", "generated"
        PASTED = "pasted", "pasted"

    # Unique: there is at most one next token, so two rotations cannot run at once.
    slot = models.CharField(max_length=8, choices=Slot.choices, unique=True)
    ciphertext = models.TextField()
    fingerprint = models.CharField(max_length=24)
    source = models.CharField(max_length=16, choices=Source.choices)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150)
    # The last probe in which a node accepted this token.
    verified_at = models.DateTimeField(null=True, blank=True)
    # The next token only: the node addresses the portal knew when the rotation started (its
    # seeds and the membership then). Membership is reported by the nodes, so an address
    # that appears later could be anyone's: only these and the seeds are sent the next
    # token (cluster/node_token.py next_token_recipients).
    known_addresses = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"{self.slot} node token {self.fingerprint}"


class NodeTokenCheck(models.Model):
    """What the last probe of one node with the token(s) of ``version`` found."""

    class State(models.TextChoices):
        CURRENT = "current", "accepts current"
        NEXT = "next", "accepts next"
        ANY = "any", "accepts any token"  # a node started with --adminInsecureNoAuth
        NEITHER = "neither", "accepts neither"
        UNREACHABLE = "unreachable", "unreachable"
        NO_ADMIN = "no_admin", "Admin not served"
        ERROR = "error", "error"

    address = models.CharField(max_length=300, unique=True)
    node_id = models.CharField(max_length=150, blank=True)
    state = models.CharField(max_length=16, choices=State.choices)
    detail = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField()
    version = models.BigIntegerField()

    class Meta:
        ordering = ("node_id", "address")

    def __str__(self) -> str:
        return f"{self.node_id or self.address}: {self.state}"
