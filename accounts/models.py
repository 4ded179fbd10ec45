"""Portal-wide settings (which also carry the role permissions), API tokens, sessions and
TOTP devices with encrypted seeds."""

from __future__ import annotations

from binascii import unhexlify
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import models
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin, TimestampMixin

from elastickv_admin.lib import crypto


class SiteSettings(models.Model):
    """The one row of settings an admin changes on the Settings page."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    require_mfa_for_admins = models.BooleanField(
        default=False, help_text="Admins must use a TOTP second factor to sign in."
    )
    audit_retention_days = models.PositiveIntegerField(
        default=0, help_text="Events older than this are pruned by audit_prune; 0 keeps all."
    )

    class Meta:
        verbose_name = "site settings"
        verbose_name_plural = "site settings"
        default_permissions = ()
        # The roles' permissions (accounts/roles.py); groups are made by a data migration.
        permissions = (
            ("view_dashboards", "View cluster dashboards and read the JSON API"),
            ("manage_portal", "Manage users, roles, the node token and settings"),
            ("view_audit", "Read and export the audit log"),
        )

    def __str__(self) -> str:
        return "site settings"


def get_site_settings() -> SiteSettings:
    site, _ = SiteSettings.objects.get_or_create(pk=1)
    return site


class ApiToken(models.Model):
    """A personal API token: ``ekv_<public_id>_<secret>``. Only the HMAC of the secret is
    stored (keyed by ELASTICKV_ADMIN_TOKEN_HASH_KEY, outside the database)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    public_id = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    # Which hash key made secret_hash (crypto.key_id), so the key can rotate; "" for tokens
    # from before key ids (checked against every configured key).
    hash_key_id = models.CharField(max_length=16, blank=True, default="")
    read_only = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"{self.name} (ekv_{self.public_id}_…)"

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    @property
    def active(self) -> bool:
        return self.revoked is None and not self.expired

    @property
    def status(self) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.expired else "active"


class UserSession(models.Model):
    """Which session belongs to whom, so an admin can end a user's sessions."""

    session_key = models.CharField(max_length=40, primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_sessions"
    )
    created = models.DateTimeField(default=timezone.now)
    source_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"session of {self.user_id}"

    @staticmethod
    def live_for_any(now: datetime) -> models.QuerySet[Session, Any]:
        return Session.objects.filter(expire_date__gt=now).values("session_key")

    @staticmethod
    def live_for(user_id: int) -> models.QuerySet[UserSession]:
        keys = UserSession.live_for_any(timezone.now())
        return UserSession.objects.filter(user_id=user_id, session_key__in=keys)


class TOTPDevice(TimestampMixin, ThrottlingMixin, Device):  # type: ignore[misc]
    """django-otp's TOTP device, with the seed encrypted at rest (elastickv_admin.lib.crypto)."""

    # Annotated: the django-stubs plugin does not infer fields below an untyped base (Device).
    encrypted_key: models.TextField[str, str] = models.TextField()
    step: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(default=30)
    digits: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(default=6)
    tolerance: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(
        default=1
    )
    drift: models.SmallIntegerField[int, int] = models.SmallIntegerField(default=0)
    last_t: models.BigIntegerField[int, int] = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):  # type: ignore[misc]
        verbose_name = "TOTP device"

    @property
    def bin_key(self) -> bytes:
        return unhexlify(crypto.decrypt(self.encrypted_key))

    def set_key(self, hex_key: str) -> None:
        self.encrypted_key = crypto.encrypt(hex_key.encode("ascii"))

    def get_throttle_factor(self) -> int:
        return 1

    def verify_token(self, token: str) -> bool:
        # django_otp.plugins.otp_totp's algorithm, reading the decrypted seed.
        import time

        from django_otp.oath import TOTP

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            value = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, 0, self.digits, self.drift)
            totp.time = time.time()
            verified = bool(totp.verify(value, self.tolerance, self.last_t + 1))
            if verified:
                self.last_t = totp.t()
                self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    def locked_for(self) -> timedelta | None:
        allowed, data = self.verify_is_allowed()
        if allowed or not data or "locked_until" not in data:
            return None
        remaining: timedelta = data["locked_until"] - timezone.now()
        return remaining
