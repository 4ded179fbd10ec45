"""The admins' Settings pages: users and roles, sessions, site settings."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import actions, lockout
from accounts.forms import RolesForm, SiteSettingsForm, UserCreateForm
from accounts.models import ApiToken, TOTPDevice, UserSession, get_site_settings
from audit.models import AuditChain


def _admin(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _users() -> list[dict[str, Any]]:
    now = timezone.now()
    users = (
        User.objects.order_by("username")
        .prefetch_related("groups")
        .annotate(
            sessions=Count(
                "portal_sessions",
                filter=Q(
                    portal_sessions__session_key__in=UserSession.live_for_any(now),
                ),
                distinct=True,
            ),
            tokens=Count("api_tokens", filter=Q(api_tokens__revoked__isnull=True), distinct=True),
        )
    )
    with_mfa = set(TOTPDevice.objects.filter(confirmed=True).values_list("user_id", flat=True))
    return [{"user": u, "roles": actions.roles_of(u), "mfa": u.pk in with_mfa} for u in users]


def _page(request: HttpRequest, status: int = 200, **extra: Any) -> HttpResponse:
    site = get_site_settings()
    chain = AuditChain.objects.filter(pk=1).first()
    context: dict[str, Any] = {
        "users": _users(),
        "create_form": UserCreateForm(),
        "site_form": SiteSettingsForm(
            initial={
                "require_mfa_for_admins": site.require_mfa_for_admins,
                "audit_retention_days": site.audit_retention_days,
            }
        ),
        "site": site,
        "audit_events": chain.head_seq - chain.anchor_seq + 1 if chain else 0,
        "lockouts": lockout.current_lockouts(),
        "lockout_limits": lockout.limits(),
    }
    context.update(extra)
    return render(request, "accounts/settings.html", context, status=status)


@never_cache
def settings_home(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@never_cache
def user_create(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, create_form=form)
    try:
        user, password = actions.do_create_user(
            _admin(request),
            form.cleaned_data["username"],
            form.cleaned_data["roles"],
            email=form.cleaned_data["email"],
        )
    except actions.ActionRefused as exc:
        form.add_error("username", str(exc))
        return _page(request, status=400, create_form=form)
    return _page(request, created={"user": user, "password": password})


@require_POST
def site_update(request: HttpRequest) -> HttpResponse:
    form = SiteSettingsForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, site_form=form)
    changed = actions.do_update_site_settings(_admin(request), **form.cleaned_data)
    return _page(request, saved=bool(changed))


@require_POST
@never_cache
def lockout_unlock(request: HttpRequest) -> HttpResponse:
    scope = request.POST.get("scope", "")
    username = request.POST.get("username", "")
    ip_address = request.POST.get("ip_address", "")
    try:
        cleared = actions.do_unlock_sign_in(_admin(request), scope, username, ip_address)
    except actions.ActionRefused as exc:
        return _page(request, status=400, lockout_error=str(exc))
    who = ip_address if scope == lockout.ADDRESS else username or "(no username)"
    return _page(request, unlocked=f"Unlocked {who} ({cleared} failed sign-ins cleared).")


@never_cache
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    admin = _admin(request)
    target = get_object_or_404(User, pk=user_id)
    message = ""
    error = ""
    secret = ""
    if request.method == "POST":
        step = request.POST.get("step", "")
        try:
            if target.is_superuser and not admin.is_superuser:
                raise actions.ActionRefused("only a superuser may change a superuser")
            if step == "roles":
                form = RolesForm(request.POST)
                if form.is_valid():
                    actions.do_set_roles(admin, target, form.cleaned_data["roles"])
                    message = "Roles saved."
            elif step in ("deactivate", "activate"):
                actions.do_set_active(admin, target, step == "activate")
                message = (
                    "Account activated."
                    if step == "activate"
                    else ("Account deactivated; its sessions ended.")
                )
            elif step == "reset-password":
                secret = actions.do_reset_password(admin, target)
                message = "Password reset; every session of this user ended."
            elif step == "end-sessions":
                ended = actions.do_end_sessions(admin, target)
                message = f"{ended} session(s) ended."
            elif step == "remove-mfa":
                actions.do_remove_totp(admin, target)
                message = "Second factor removed."
            else:
                error = "unknown action"
        except actions.ActionRefused as exc:
            error = str(exc)
        target.refresh_from_db()
    roles = actions.roles_of(target)
    group_roles = sorted(g.name for g in target.groups.all())
    context = {
        "target": target,
        "roles": roles,
        "roles_form": RolesForm(initial={"roles": group_roles}),
        "sessions": UserSession.live_for(target.pk).order_by("-created"),
        "tokens": ApiToken.objects.filter(user=target),
        "mfa": TOTPDevice.objects.filter(user=target, confirmed=True).exists(),
        "message": message,
        "error": error,
        "secret": secret,
        "is_self": target.pk == admin.pk,
    }
    return render(request, "accounts/user_detail.html", context, status=400 if error else 200)
