"""Sign in (password, then TOTP when enrolled or required), sign out, personal API tokens,
and the second factor. Thin: forms in, action functions (accounts/actions.py) do the work.

The login path is sync on purpose: authenticate() runs django-axes' lockout check in the
same thread as the password check (accounts/backends.py covers aauthenticate too).
"""

from __future__ import annotations

import time
from base64 import b32encode
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import segno
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts import actions, lockout
from accounts.forms import CodeForm, LoginForm, TokenForm
from accounts.models import ApiToken, TOTPDevice
from accounts.policy import Target, decide, landing
from accounts.roles import MANAGE_PORTAL

PENDING = "pending_login"
PENDING_SECONDS = 300


def home_for(user: User) -> str:
    """The first page in the navigation this user may open (accounts/policy.py landing)."""
    name = landing(user)
    return reverse(name) if name is not None else reverse("accounts:tokens")


def _may_open(url: str, user: User) -> bool:
    """Whether the policy lets `user` open the page at `url` (a local URL)."""
    try:
        match = resolve(urlsplit(url).path)
    except Resolver404:
        return True  # not a page of ours to refuse: the 404 page answers
    return decide(user, Target.page(match.view_name)).allowed


def _next_url(request: HttpRequest, fallback: str = "", user: User | None = None) -> str:
    """Where to go after signing in: `next` if it is local and, once the user is known,
    a page their roles open (an auditor sent to / lands on the audit log, not on a
    refusal); else `fallback`, else the user's first page."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if (
        candidate
        and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        and (user is None or _may_open(candidate, user))
    ):
        return candidate
    if fallback:
        return fallback
    return home_for(user) if user is not None else reverse(settings.LOGIN_REDIRECT_URL)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(_next_url(request, user=_user(request)))
    form = LoginForm(request, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = form.get_user()
        if actions.confirmed_device(user) is not None or actions.mfa_required(user):
            # Password done; the session is not signed in until the second factor is.
            request.session.cycle_key()
            request.session[PENDING] = {
                "user_id": user.pk,
                "at": time.time(),
                "next": _next_url(request, user=user),
            }
            return redirect("accounts:login-mfa")
        actions.do_login(request, user, mfa=False)
        return redirect(_next_url(request, user=user))
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "accounts/login.html",
        {"form": form, "next": _next_url(request, fallback="")},
        status=status,
    )


LOCKED_WHAT = {
    lockout.PAIR: "for this user from your address",
    lockout.USERNAME: "for this user",
    lockout.ADDRESS: "from your address",
}


def locked_out(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): the login page, refused."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    scopes = getattr(request, "axes_lockout_scopes", None) or [lockout.PAIR]
    return render(
        request,
        "accounts/login.html",
        {
            "form": LoginForm(request),
            "locked": f"Too many failed sign-ins {LOCKED_WHAT[scopes[0]]}. "
            f"Try again in {minutes} minutes, or ask an admin to unlock it.",
        },
        status=429,
    )


def _pending_user(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    pending = request.session.get(PENDING)
    if not pending or time.time() - float(pending.get("at", 0)) > PENDING_SECONDS:
        request.session.pop(PENDING, None)
        return None
    user = User.objects.filter(pk=pending["user_id"], is_active=True).first()
    return (user, pending) if user else None


def _enrolment(user: User, device: TOTPDevice) -> dict[str, Any]:
    secret = b32encode(device.bin_key).decode("ascii")
    issuer = settings.OTP_TOTP_ISSUER
    uri = (
        f"otpauth://totp/{quote(issuer)}:{quote(user.username)}?secret={secret}"
        f"&issuer={quote(issuer)}&digits={device.digits}&period={device.step}"
    )
    qr = segno.make(uri, error="m").svg_inline(scale=4, border=2, omitsize=True)
    return {"secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)), "qr": qr}


def _code_error(wait: timedelta | None) -> str:
    """What went wrong with a code. `wait`: the back-off the attempt was made in (the
    code was then refused unchecked); only then is there anything to wait for."""
    if wait is not None:
        return f"Too many wrong codes: wait {max(1, int(wait.total_seconds()))} s and try again."
    return "Wrong code; try again. Check your device's clock and use the current code."


@sensitive_post_parameters("otp_token")
@csrf_protect
@never_cache
def login_mfa(request: HttpRequest) -> HttpResponse:
    found = _pending_user(request)
    if found is None:
        return redirect("accounts:login")
    user, pending = found
    device = actions.confirmed_device(user)
    enrolling = device is None
    if enrolling:
        device = TOTPDevice.objects.filter(pk=pending.get("device_id"), user=user).first()
        if device is None:
            device, _ = actions.do_start_totp(user)
            pending["device_id"] = device.pk
            request.session[PENDING] = pending
    assert device is not None
    form = CodeForm(request.POST if request.method == "POST" else None)
    error = ""
    if request.method == "POST" and form.is_valid():
        wait = device.locked_for()  # before this attempt: a wrong code starts a back-off
        ok = (
            actions.do_confirm_totp(user, device, form.code())
            if enrolling
            else actions.do_verify_totp(user, device, form.code())
        )
        if ok:
            next_url = str(pending.get("next") or home_for(user))
            request.session.pop(PENDING, None)
            actions.do_login(request, user, mfa=True)
            return redirect(next_url)
        error = _code_error(wait)
    context: dict[str, Any] = {"form": form, "error": error, "enrolling": enrolling, "who": user}
    if enrolling:
        context.update(_enrolment(user, device))
    return render(request, "accounts/login_mfa.html", context, status=400 if error else 200)


@csrf_protect
@never_cache
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        actions.do_logout(request)
        return redirect("accounts:login")
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return render(request, "accounts/logout.html")


# --- personal API tokens ---------------------------------------------------------------------


@never_cache
def tokens(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = TokenForm(request.POST if request.method == "POST" else None)
    created = None
    if request.method == "POST" and form.is_valid():
        created = actions.do_create_api_token(
            user,
            user,
            form.cleaned_data["name"],
            expires_days=form.cleaned_data["expires_days"],
            read_only=not form.cleaned_data["read_write"],
        )
        form = TokenForm()
    return render(
        request,
        "accounts/tokens.html",
        {
            "form": form,
            "created": created,
            "tokens": ApiToken.objects.filter(user=user),
        },
        status=400 if request.method == "POST" and created is None else 200,
    )


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    user = _user(request)
    token = get_object_or_404(ApiToken.objects.select_related("user"), pk=token_id)
    # Owners revoke their own; admins anyone's. Others learn nothing (404).
    if token.user_id != user.pk and not user.has_perm(MANAGE_PORTAL):
        return render(request, "error.html", {"status": 404, "title": "Page not found"}, status=404)
    actions.do_revoke_api_token(user, token)
    fallback = reverse("accounts:tokens")
    return HttpResponseRedirect(_next_url(request, fallback=fallback))


# --- second factor for a signed-in user ------------------------------------------------------


@sensitive_post_parameters("otp_token", "password")
@never_cache
def mfa(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    device = actions.confirmed_device(user)
    required = actions.mfa_required(user)
    pending = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    form = CodeForm()
    error = ""
    message = ""
    step = request.POST.get("step", "") if request.method == "POST" else ""
    if step == "start":
        pending, _ = actions.do_start_totp(user)
    elif step == "confirm" and pending is not None:
        form = CodeForm(request.POST)
        wait = pending.locked_for()
        if form.is_valid() and actions.do_confirm_totp(user, pending, form.code()):
            request.session["mfa_verified"] = True
            device, pending = pending, None
            message = "Two-factor sign-in is on. You will be asked for a code at every sign-in."
        elif form.is_valid():
            error = _code_error(wait)
    elif step == "remove" and device is not None:
        if required:
            error = "Admins must keep a second factor on this portal (site setting)."
        else:
            try:
                actions.do_remove_own_totp(
                    request,
                    user,
                    device,
                    password=request.POST.get("password", ""),
                    code=request.POST.get("otp_token", "").strip(),
                )
            except actions.ActionRefused as exc:
                error = str(exc)
            else:
                device = None
                request.session.pop("mfa_verified", None)
                message = "Two-factor sign-in is off."
    context: dict[str, Any] = {
        "device": device,
        "pending": pending,
        "required": required,
        "form": form,
        "error": error,
        "message": message,
    }
    if pending is not None:
        context.update(_enrolment(user, pending))
    return render(request, "accounts/mfa.html", context, status=400 if error else 200)
