"""Secrets at rest: one Fernet key derived from ELASTICKV_ADMIN_SECRETS_KEY (kept outside the
database). TOTP seeds use it today; the node token store uses the same two functions.

The configured secret may be any high-entropy string; HKDF turns it into the 32-byte
Fernet key, so operators need not produce Fernet's exact format.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "decrypt", "encrypt"]


@lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"elastickv-admin secrets at rest"
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _key() -> str:
    from django.conf import settings

    secret: str = settings.SECRETS_KEY
    return secret


def encrypt(plaintext: bytes) -> str:
    """Authenticated encryption (AES-128-CBC + HMAC-SHA256) as URL-safe text."""
    return _fernet(_key()).encrypt(plaintext).decode("ascii")


def decrypt(ciphertext: str) -> bytes:
    """Raises InvalidToken when the ciphertext was altered or the key changed."""
    return _fernet(_key()).decrypt(ciphertext.encode("ascii"))
