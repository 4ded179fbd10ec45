"""Small helpers shared by test modules."""

from __future__ import annotations

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip when a tier's prerequisite is missing (CI turns the skip into a failure)."""
    if not condition:
        pytest.skip(reason)


# Fernet tokens start with version byte 0x80, i.e. "gAAAAA" in URL-safe base64.
FERNET_TEXT = r"gAAAAA[A-Za-z0-9_\-=]+"


def database_dump() -> str:
    """Every row of every table, raw, as one string (for "no secret in clear" checks)."""
    from django.db import connection

    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the schema)
            parts.append(f"{table}: {cursor.fetchall()!r}")
    return "\n".join(parts)


def decrypted_values(dump: str) -> set[str]:
    """Every Fernet ciphertext in ``dump`` that the configured keys can read, decrypted."""
    import contextlib
    import re

    from elastickv_admin import crypto

    found = set()
    for ciphertext in re.findall(FERNET_TEXT, dump):
        with contextlib.suppress(crypto.InvalidToken):
            found.add(crypto.decrypt(ciphertext).decode("utf-8", "replace"))
    return found
