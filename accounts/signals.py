"""Audit events for what Django and django-axes decide inside authenticate()/aauthenticate():
failed logins and lockouts; and the session bookkeeping behind "force logout"."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.models import UserSession
from audit.failures import record_failure
from audit.models import Outcome
from elastickv_admin.lib.net import client_ip


@receiver(user_login_failed)
def login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the username: Django already masks the password, and we never keep it anyway.
    username = str(credentials.get("username", ""))[:150]
    locked = bool(getattr(request, "axes_locked_out", False))
    # Repeats from one source fold into one event a window (audit/failures.py); once
    # locked out, every further try is the same failure whatever the username.
    record_failure(
        "login.failed",
        reason="locked out" if locked else f"user {username}",
        target=f"user:{username}",
        outcome=Outcome.FAILURE,
        details={"username": username, "locked_out": locked},
    )


@receiver(user_locked_out)
def locked_out(
    sender: Any, request: HttpRequest, username: str | None = None, **kwargs: Any
) -> None:
    # Which limits were reached: pair, username, address (accounts/lockout.py).
    scopes = list(getattr(request, "axes_lockout_scopes", []))
    per_user = scopes != ["address"]
    record_failure(
        "login.lockout",
        reason=",".join(scopes) + (f" user {username or ''}" if per_user else ""),
        target=f"user:{username or ''}",
        outcome=Outcome.DENIED,
        details={
            "username": username or "",
            "ip_address": kwargs.get("ip_address") or "",
            "scopes": scopes,
        },
    )


@receiver(user_logged_in)
def track_session(sender: Any, request: HttpRequest, user: User, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is None:
        return
    if session.session_key is None:
        session.save()
    UserSession.objects.update_or_create(
        session_key=session.session_key,
        defaults={
            "user": user,
            "source_ip": client_ip(request),
            "user_agent": request.headers.get("User-Agent", "")[:300]
            if hasattr(request, "headers")
            else "",
        },
    )
