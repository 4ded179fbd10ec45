"""Every state change of accounts, one ``do_*`` function each (zulip's habit): the change
and its audit event commit together or not at all. An action done by someone to something
takes the actor first, explicitly, and names it in the event; an action a user does to
their own account (sign in and out, their second factor, a token's use) acts as that user."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.contrib.sessions.models import Session
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp.util import random_hex

from accounts import lockout
from accounts.models import ApiToken, SiteSettings, TOTPDevice, UserSession, get_site_settings
from accounts.roles import MANAGE_PORTAL, ROLE_NAMES
from accounts.tokens import NewToken, due_for_last_used, hash_secret, mint, token_keys
from audit.context import Actor, actor_name, set_actor
from audit.failures import record_failure
from audit.models import Outcome
from audit.service import record_event


class ActionRefused(Exception):
    """A request that is understood but not allowed (message says why)."""


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def roles_of(user: AbstractBaseUser | AnonymousUser) -> list[str]:
    if not user.is_authenticated:
        return []
    if getattr(user, "is_superuser", False):
        return list(ROLE_NAMES)
    assert isinstance(user, User)
    return sorted(g.name for g in user.groups.all() if g.name in ROLE_NAMES)


# --- sessions --------------------------------------------------------------------------------


@transaction.atomic
def do_login(request: HttpRequest, user: User, *, mfa: bool) -> None:
    """Audit first: a login that cannot be audited does not happen."""
    set_actor(user.get_username())
    record_event("login", target=f"user:{user.get_username()}", details={"mfa": mfa})
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    if mfa:
        request.session["mfa_verified"] = True


@transaction.atomic
def do_logout(request: HttpRequest) -> None:
    user = request.user
    if user.is_authenticated:
        record_event("logout", target=f"user:{user.get_username()}")
        if request.session.session_key:
            UserSession.objects.filter(session_key=request.session.session_key).delete()
    logout(request)


def _end_sessions(user: User) -> int:
    keys = list(UserSession.objects.filter(user=user).values_list("session_key", flat=True))
    ended, _ = Session.objects.filter(session_key__in=keys).delete()
    UserSession.objects.filter(user=user).delete()
    return ended


@transaction.atomic
def do_end_sessions(actor: Actor, user: User) -> int:
    """Force logout: every session of the user ends now (their WebSockets within a
    recheck interval)."""
    ended = _end_sessions(user)
    record_event(
        "user.sessions_ended",
        target=f"user:{user.username}",
        details={"sessions": ended},
        actor=actor,
    )
    return ended


# --- users and roles -------------------------------------------------------------------------


def _check_roles(roles: Iterable[str]) -> list[str]:
    wanted = sorted(set(roles))
    unknown = [r for r in wanted if r not in ROLE_NAMES]
    if unknown:
        raise ActionRefused(f"unknown role(s): {', '.join(unknown)}")
    return wanted


@transaction.atomic
def do_create_user(
    actor: Actor, username: str, roles: Iterable[str], *, email: str = ""
) -> tuple[User, str]:
    """A new active user with a generated password (shown once to the admin)."""
    wanted = _check_roles(roles)
    if User.objects.filter(username__iexact=username).exists():
        raise ActionRefused(f"a user named {username!r} already exists")
    password = generate_password()
    user = User.objects.create_user(username=username, email=email, password=password)
    user.groups.set(Group.objects.filter(name__in=wanted))
    record_event("user.created", target=f"user:{username}", details={"roles": wanted}, actor=actor)
    return user, password


def _is(actor: Actor, user: User) -> bool:
    return isinstance(actor, User) and actor.pk == user.pk


@transaction.atomic
def do_set_roles(actor: Actor, user: User, roles: Iterable[str]) -> list[str]:
    wanted = _check_roles(roles)
    before = sorted(g.name for g in user.groups.all() if g.name in ROLE_NAMES)
    removing_own_admin = _is(actor, user) and "admin" not in wanted
    if removing_own_admin and "admin" in before and not user.is_superuser:
        raise ActionRefused("you cannot remove your own admin role")
    user.groups.set(Group.objects.filter(name__in=wanted))
    record_event(
        "user.roles_changed",
        target=f"user:{user.username}",
        details={"before": before, "after": wanted},
        actor=actor,
    )
    return wanted


@transaction.atomic
def do_set_active(actor: Actor, user: User, active: bool) -> None:
    if _is(actor, user) and not active:
        raise ActionRefused("you cannot deactivate your own account")
    if user.is_active == active:
        return
    user.is_active = active
    user.save(update_fields=["is_active"])
    ended = 0 if active else _end_sessions(user)
    record_event(
        "user.activated" if active else "user.deactivated",
        target=f"user:{user.username}",
        details={"sessions_ended": ended},
        actor=actor,
    )


@transaction.atomic
def do_reset_password(actor: Actor, user: User) -> str:
    """A new generated password (shown once); every session of the user ends."""
    password = generate_password()
    user.set_password(password)
    user.save(update_fields=["password"])
    ended = _end_sessions(user)
    record_event(
        "user.password_reset",
        target=f"user:{user.username}",
        details={"sessions_ended": ended},
        actor=actor,
    )
    return password


@transaction.atomic
def do_record_superuser_created(actor: Actor, user: User, via: str) -> None:
    record_event(
        "user.created",
        target=f"user:{user.username}",
        details={"roles": list(ROLE_NAMES), "superuser": True, "via": via},
        actor=actor,
    )


# --- sign-in lockouts ------------------------------------------------------------------------


@transaction.atomic
def do_unlock_sign_in(actor: Actor, scope: str, username: str, ip_address: str) -> int:
    """End one lockout now (its failures are forgotten); the admin is the event's actor."""
    try:
        attempts = lockout.attempts_for(scope, username, ip_address)
    except ValueError as exc:
        raise ActionRefused(str(exc)) from None
    failures = int(sum(attempts.values_list("failures_since_start", flat=True)))
    if not failures:
        raise ActionRefused("that lockout has already ended (no failures left to clear)")
    attempts.delete()
    record_event(
        "login.unlocked",
        target=f"address:{ip_address}" if scope == lockout.ADDRESS else f"user:{username}",
        details={
            "scope": scope,
            "username": "" if scope == lockout.ADDRESS else username,
            "ip_address": "" if scope == lockout.USERNAME else ip_address,
            "failures_cleared": failures,
        },
        actor=actor,
    )
    return failures


# --- API tokens ------------------------------------------------------------------------------


@transaction.atomic
def do_create_api_token(
    actor: Actor,
    user: User,
    name: str,
    *,
    expires_days: int | None = None,
    read_only: bool = True,
) -> NewToken:
    """A token for `user` (its owner), made by `actor` (the owner on their tokens page, an
    operator with create_api_token)."""
    name = name.strip() or "token"
    if expires_days is not None and expires_days < 1:
        raise ActionRefused("expiry must be at least one day")
    public_id, secret, plaintext = mint()
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        public_id=public_id,
        secret_hash=hash_secret(secret, token_keys().primary),
        hash_key_id=token_keys().current_id,
        read_only=read_only,
        expires=timezone.now() + timedelta(days=expires_days) if expires_days else None,
    )
    record_event(
        "api_token.created",
        target=f"token:{public_id}",
        details={
            "owner": user.username,
            "name": token.name,
            "read_only": read_only,
            "expires": token.expires.isoformat() if token.expires else None,
        },
        actor=actor,
    )
    return NewToken(token, plaintext)


@transaction.atomic
def do_revoke_api_token(actor: Actor, token: ApiToken) -> None:
    if token.revoked is not None:
        return
    token.revoked = timezone.now()
    token.save(update_fields=["revoked"])
    record_event(
        "api_token.revoked",
        target=f"token:{token.public_id}",
        details={"owner": token.user.username, "name": token.name},
        actor=actor,
    )


@transaction.atomic
def do_note_token_used(token: ApiToken, *, method: str, path: str) -> None:
    """Last used (and the api_token.used event) at most once a minute per token."""
    if not due_for_last_used(token):
        return
    now = timezone.now()
    token.last_used = now
    ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    record_event(
        "api_token.used",
        target=f"token:{token.public_id}",
        details={"owner": token.user.username, "method": method, "path": path},
    )


# --- TOTP second factor ----------------------------------------------------------------------


@transaction.atomic
def do_start_totp(user: User) -> tuple[TOTPDevice, str]:
    """An unconfirmed device with a fresh seed (encrypted in the row); returns the hex seed
    for the enrolment page only."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    hex_key = random_hex(20)
    device = TOTPDevice(user=user, name="authenticator app", confirmed=False)
    device.set_key(hex_key)
    device.save()
    record_event("mfa.enrolment_started", target=f"user:{user.username}")
    return device, hex_key


def _failed(user: User, device: TOTPDevice, stage: str) -> None:
    record_failure(
        "mfa.failed",
        reason=f"{stage} user {user.username}",
        target=f"user:{user.username}",
        outcome=Outcome.FAILURE,
        details={"stage": stage, "failures": device.throttling_failure_count},
    )


@transaction.atomic
def do_confirm_totp(user: User, device: TOTPDevice, code: str) -> bool:
    if not device.verify_token(code):
        _failed(user, device, "enrol")
        return False
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    record_event("mfa.enrolled", target=f"user:{user.username}")
    return True


def do_verify_totp(user: User, device: TOTPDevice, code: str) -> bool:
    # Not atomic as a whole: a failed code's throttle count must survive (it is saved by
    # verify_token), and the failure event goes with it.
    with transaction.atomic():
        ok = bool(device.verify_token(code))
        if not ok:
            _failed(user, device, "login")
    return ok


@transaction.atomic
def do_remove_totp(actor: Actor, user: User) -> int:
    """Remove every device of ``user``: the user themselves (after do_remove_own_totp's
    proof) or an admin doing it for someone else."""
    removed: int = TOTPDevice.objects.filter(user=user).delete()[0]
    record_event(
        "mfa.removed",
        target=f"user:{user.username}",
        details={"devices": removed, "by": actor_name(actor)},
        actor=actor,
    )
    return removed


REMOVE_PROOF_NEEDED = (
    "To turn off two-factor sign-in, enter your current password or a current code from "
    "your authenticator app."
)


def do_remove_own_totp(
    request: HttpRequest, user: User, device: TOTPDevice, *, password: str = "", code: str = ""
) -> int:
    """The user's own removal needs proof beyond the session: the current password or a
    current code, so a hijacked session cannot quietly strip the second factor. A wrong
    proof is refused and audited; the password goes through authenticate(), so guesses
    count towards the sign-in lockout, and codes through the device's own throttle."""
    if password:
        proof = "password"
        who = authenticate(request, username=user.get_username(), password=password)
        ok = who is not None and who.pk == user.pk
    elif code:
        proof = "code"
        with transaction.atomic():
            ok = bool(device.verify_token(code))
    else:
        proof = "none"
        ok = False
    if not ok:
        record_failure(
            "mfa.remove_refused",
            reason=proof,
            target=f"user:{user.username}",
            outcome=Outcome.DENIED,
            details={"proof": proof},
        )
        if proof == "none":
            raise ActionRefused(REMOVE_PROOF_NEEDED)
        what = "password" if proof == "password" else "code"
        raise ActionRefused(f"That {what} is not right; two-factor sign-in stays on.")
    return do_remove_totp(user, user)


def mfa_required(user: User) -> bool:
    return bool(get_site_settings().require_mfa_for_admins and user.has_perm(MANAGE_PORTAL))


def confirmed_device(user: User) -> TOTPDevice | None:
    device: TOTPDevice | None = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    return device


# --- site settings ---------------------------------------------------------------------------


@transaction.atomic
def do_update_site_settings(actor: Actor, **changes: Any) -> dict[str, tuple[Any, Any]]:
    site = SiteSettings.objects.select_for_update().get_or_create(pk=1)[0]
    changed: dict[str, tuple[Any, Any]] = {}
    for field, value in changes.items():
        old = getattr(site, field)
        if old != value:
            setattr(site, field, value)
            changed[field] = (old, value)
    if changed:
        site.save()
        record_event(
            "settings.changed",
            target="site",
            details={k: {"before": old, "after": new} for k, (old, new) in changed.items()},
            actor=actor,
        )
    return changed
