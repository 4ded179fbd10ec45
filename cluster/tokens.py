"""The bearer tokens the portal presents to the nodes' Admin service.

During a rotation the portal holds two tokens (current and next). For each node
it tries the one that node last accepted first and falls back to the other on
UNAUTHENTICATED (DESIGN.md "Talking to nodes"). A token's value never appears in
a repr, a log line or an error message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

MAX_TOKEN_BYTES = 4096


class TokenFileError(ValueError):
    pass


@dataclass(frozen=True)
class NodeToken:
    label: str  # "current" or "next"
    value: str = field(repr=False)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.value}"),)


def read_token_file(path: str | Path) -> str:
    """A node token file: at most 4 KiB, whitespace trimmed, empty rejected (as nodes do)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"token file {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(
            f"token file {str(path)!r} is {len(raw)} bytes; at most {MAX_TOKEN_BYTES}"
        )
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {str(path)!r} is not UTF-8 text") from None
    if not token:
        raise TokenFileError(f"token file {str(path)!r} is empty")
    return token


class NodeTokenStore:
    """Current (and during rotation, next) token, plus which one each node accepts."""

    def __init__(self, current: str | None, next_token: str | None = None) -> None:
        self._lock = threading.Lock()
        self._tokens = [NodeToken("current", current)] if current else []
        if next_token:
            self._tokens.append(NodeToken("next", next_token))
        self._accepted: dict[str, str] = {}

    @property
    def insecure(self) -> bool:
        return not self._tokens

    def candidates(self, address: str) -> list[NodeToken]:
        """Tokens to try against ``address``, the one it last accepted first."""
        with self._lock:
            preferred = self._accepted.get(address)
            return sorted(self._tokens, key=lambda t: t.label != preferred)

    def accepted(self, address: str, label: str) -> None:
        with self._lock:
            self._accepted[address] = label

    def accepted_label(self, address: str) -> str | None:
        with self._lock:
            return self._accepted.get(address)

    def set_tokens(self, current: str | None, next_token: str | None) -> None:
        with self._lock:
            self._tokens = [NodeToken("current", current)] if current else []
            if next_token:
                self._tokens.append(NodeToken("next", next_token))
            labels = {t.label for t in self._tokens}
            self._accepted = {a: lbl for a, lbl in self._accepted.items() if lbl in labels}
