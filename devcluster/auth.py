"""Bearer-token checks exactly as real nodes make them, plus a token file that may change."""

from __future__ import annotations

import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_TOKEN_FILE_BYTES = 4096
BEARER_PREFIX = "Bearer "


class TokenFileError(ValueError):
    """The token file cannot serve as an admin token (too large, empty, unreadable)."""


def parse_token(data: bytes, source: str) -> str:
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise TokenFileError(f"admin token {source} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"admin token {source} is not UTF-8") from None
    if not token:
        raise TokenFileError(f"admin token {source} is empty")
    return token


def read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as e:
        raise TokenFileError(f"cannot read admin token file {path}: {e.strerror}") from None
    return parse_token(data, f"file {path}")


def bearer_failure(metadata: Iterable[tuple[str, str | bytes]], token: str) -> str | None:
    """The UNAUTHENTICATED message real nodes give for this metadata, or None when valid."""
    value = next((v for k, v in metadata if k == "authorization"), None)  # first value only
    if value is None:
        return "missing authorization header"
    if isinstance(value, bytes) or not value.startswith(BEARER_PREFIX):
        return "authorization is not a bearer token"
    presented = value[len(BEARER_PREFIX) :].encode()
    if not hmac.compare_digest(presented, token.encode()):
        return "invalid admin token"
    return None


def write_token_file(path: Path, token: str) -> None:
    """Atomically replace the file (a new inode, so a watching node notices at once)."""
    parse_token(token.encode(), "value")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, path)  # mkstemp already made it owner-only (0600)


class TokenFile:
    """A node's admin token file. Unlike a real node, it is re-read whenever it changes,
    so token rotation can be shown without restarts. A change that leaves the file
    unusable (empty, too large) keeps the previous token and logs a warning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Calls arrive on many server threads: one re-reads, the others wait for its answer
        # (without the lock, a thread could see the new signature with the old token).
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._token = read_token_file(path)

    def token(self) -> str:
        with self._lock:
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                try:
                    self._token = read_token_file(self.path)
                except TokenFileError as e:
                    log.warning("keeping the previous admin token: %s", e)
            return self._token

    def write(self, token: str) -> None:
        write_token_file(self.path, token)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)
