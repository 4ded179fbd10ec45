"""Personal API tokens (netbox's scheme): ``ekv_<public id>_<secret>``.

The public id finds the row; the secret is checked against its HMAC-SHA256 (keyed by
ELASTICKV_ADMIN_TOKEN_HASH_KEY, which is not in the database) in constant time. The row
names the hash key by id, so the key can rotate: keys in ELASTICKV_ADMIN_TOKEN_HASH_OLD_KEYS
still verify the tokens they hashed. The token itself is shown once and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import ApiToken
from elastickv_admin.lib.crypto import Keyring, keyring

PREFIX = "ekv"
_TOKEN = re.compile(r"^ekv_([a-z0-9]{12})_([A-Za-z0-9_-]{32,128})$")
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    plaintext: str


def token_keys() -> Keyring:
    return keyring("TOKEN_HASH_KEY", "TOKEN_HASH_OLD_KEYS")


def hash_secret(secret: str, key: str | None = None) -> str:
    """The stored form of a token's secret, under `key` (default: the current hash key)."""
    key = key if key is not None else str(settings.TOKEN_HASH_KEY)
    return hmac.new(key.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, token: ApiToken | None) -> bool:
    """Whether `secret` is `token`'s, under the key the row names (constant time; one hash
    even when there is no token, so timing does not tell ids apart)."""
    keys = token_keys()
    if token is None:
        hash_secret(secret, keys.primary)
        return False
    ok = False
    for key in keys.candidates(token.hash_key_id):
        ok |= hmac.compare_digest(hash_secret(secret, key), token.secret_hash)
    return ok


def mint() -> tuple[str, str, str]:
    """(public id, secret, plaintext token)."""
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return public_id, secret, f"{PREFIX}_{public_id}_{secret}"


class TokenRejected(Exception):
    """Not a valid token; the message says why without echoing the token."""


def authenticate_token(raw: str) -> ApiToken:
    """The active token ``raw`` names, with its user; raises TokenRejected otherwise."""
    match = _TOKEN.match(raw.strip())
    if not match:
        raise TokenRejected("malformed API token (expected ekv_<id>_<secret>)")
    public_id, secret = match.groups()
    token = ApiToken.objects.select_related("user").filter(public_id=public_id).first()
    matched = secret_matches(secret, token)
    if token is None or not matched:
        raise TokenRejected("invalid API token")
    if token.revoked is not None:
        raise TokenRejected("API token revoked")
    if token.expired:
        raise TokenRejected("API token expired")
    if not token.user.is_active:
        raise TokenRejected("the API token's user is deactivated")
    return token


def due_for_last_used(token: ApiToken) -> bool:
    return token.last_used is None or timezone.now() - token.last_used >= LAST_USED_EVERY


def bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
