from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from accounts.roles import ROLES

ROLE_CHOICES = [(name, f"{name} — {what}") for name, (_, what) in ROLES.items()]
EXPIRY_CHOICES = [
    ("", "never"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
]


class LoginForm(AuthenticationForm):
    username = forms.CharField(
        max_length=150,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"}),
    )


class CodeForm(forms.Form):
    otp_token = forms.RegexField(
        regex=r"^\s*\d{6}\s*$",
        label="6-digit code",
        error_messages={"invalid": "Enter the 6-digit code from your authenticator app."},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )

    def code(self) -> str:
        return str(self.cleaned_data["otp_token"]).strip()


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, initial="automation")
    expires_days = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
        initial="90",
        label="expires",
    )
    read_write = forms.BooleanField(required=False, label="read-write (may use POST, PUT, DELETE)")


class UserCreateForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]{1,150}$",
        max_length=150,
        error_messages={"invalid": "Letters, digits and @ . + - _ only."},
    )
    email = forms.EmailField(required=False)
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )


class RolesForm(forms.Form):
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )


class SiteSettingsForm(forms.Form):
    require_mfa_for_admins = forms.BooleanField(
        required=False, label="Require a TOTP second factor for admins"
    )
    audit_retention_days = forms.IntegerField(
        min_value=0, max_value=36500, label="Audit retention (days, 0 keeps everything)"
    )
