"""Secrets at rest: Fernet keys derived from ELASTICKV_ADMIN_SECRETS_KEY (kept outside the
database). TOTP seeds and the node bearer tokens use these functions.

The configured secret may be any high-entropy string; HKDF turns it into the 32-byte
Fernet key, so operators need not produce Fernet's exact format.

Key rotation (README "Secrets at rest"): the new key becomes ELASTICKV_ADMIN_SECRETS_KEY and
the old one moves to ELASTICKV_ADMIN_SECRETS_OLD_KEYS, so every process can still read what
the old key wrote (MultiFernet); ``manage.py reencrypt_secrets`` then rewrites every stored
secret under the new key, after which the old key can be dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "Keyring", "decrypt", "encrypt", "key_id", "keyring", "reencrypt"]


@lru_cache(maxsize=8)
def _fernet(secret: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"elastickv-admin secrets at rest"
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _keys() -> tuple[str, ...]:
    """The primary key first, then the previous keys that may still be read."""
    ring = keyring("SECRETS_KEY", "SECRETS_OLD_KEYS")
    return (ring.primary, *ring.old)


def _multi() -> MultiFernet:
    return MultiFernet([_fernet(k) for k in _keys()])


def encrypt(plaintext: bytes) -> str:
    """Authenticated encryption (AES-128-CBC + HMAC-SHA256) under the primary key, as
    URL-safe text."""
    return _multi().encrypt(plaintext).decode("ascii")


def decrypt(ciphertext: str) -> bytes:
    """With the primary or a previous key; raises InvalidToken when the ciphertext was
    altered or none of the configured keys wrote it."""
    return _multi().decrypt(ciphertext.encode("ascii"))


def reencrypt(ciphertext: str) -> str:
    """The same plaintext encrypted under the primary key (raises InvalidToken as decrypt)."""
    return _multi().rotate(ciphertext.encode("ascii")).decode("ascii")


# --- keyed hashes and MACs with key ids -------------------------------------------------------
#
# The API tokens' hash key and the audit key are rotated like the secrets key: the new key
# becomes the primary, the old one moves to ``*_OLD_KEYS``. A stored hash or MAC names the
# key that made it by id (NetBox's pepper id), so verification takes that key, and data
# from before key ids (an empty id) is tried against every configured key.

KEY_ID_CHARS = 12


@lru_cache(maxsize=32)
def key_id(secret: str) -> str:
    """A short public name for a key: it tells keys apart and says nothing about them."""
    digest = hmac.new(secret.encode(), b"elastickv-admin key id", hashlib.sha256).hexdigest()
    return digest[:KEY_ID_CHARS]


@dataclass(frozen=True)
class Keyring:
    """The primary key (which signs) and the previous keys (which still verify)."""

    primary: str
    old: tuple[str, ...] = ()

    @classmethod
    def of(cls, primary: str, old: Iterable[str] = ()) -> Keyring:
        return cls(primary, tuple(k for k in old if k != primary))

    @property
    def current_id(self) -> str:
        return key_id(self.primary)

    def candidates(self, kid: str) -> tuple[str, ...]:
        """The keys to verify a value stamped with `kid`: that key; every key for a value
        from before key ids (""); none for a key no longer configured."""
        keys = (self.primary, *self.old)
        if not kid:
            return keys
        return tuple(k for k in keys if key_id(k) == kid)

    def __repr__(self) -> str:  # never the keys themselves, in a log or a traceback
        return f"Keyring(current={self.current_id}, old={[key_id(k) for k in self.old]})"


def keyring(primary_setting: str, old_setting: str) -> Keyring:
    from django.conf import settings

    primary: str = getattr(settings, primary_setting)
    return Keyring.of(primary, getattr(settings, old_setting, ()))
