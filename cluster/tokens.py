"""The bearer tokens the portal presents to the nodes' Admin service.

During a rotation the portal holds two tokens (current and next). For each node
it tries the one that node last accepted first and falls back to the other on
UNAUTHENTICATED (DESIGN.md "Talking to nodes"); the next token only to the nodes known
when the rotation started (``next_to``). A token's value never appears in
a repr, a log line or an error message: what people see is its fingerprint.

Where the tokens come from is the store's business: this base store holds what it was
given; cluster/node_token.py's DatabaseTokenStore follows the database, where rotations
happen (``sync()`` runs before every node call).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MAX_TOKEN_BYTES = 4096
# A pasted token must be at least this long; generated ones are 43 characters (256 bits).
MIN_TOKEN_CHARS = 16
GENERATED_TOKEN_BYTES = 32
FINGERPRINT_HEX_DIGITS = 12


class TokenFileError(ValueError):
    """``kind`` says which rule failed: unreadable, too_large, not_text or empty."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


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
        raise TokenFileError(
            f"token file {str(path)!r} cannot be read: {exc.strerror}", "unreadable"
        ) from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(
            f"token file {str(path)!r} is {len(raw)} bytes; at most {MAX_TOKEN_BYTES}",
            "too_large",
        )
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {str(path)!r} is not UTF-8 text", "not_text") from None
    if not token:
        raise TokenFileError(f"token file {str(path)!r} is empty", "empty")
    return token


def fingerprint(token: str) -> str:
    """A short, non-secret name for a token: the first 48 bits of its SHA-256, so an
    operator can compare a node's token file with ``tr -d '\\n' < FILE | sha256sum``."""
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return f"sha256:{digest[:FINGERPRINT_HEX_DIGITS]}"


def generate_token() -> str:
    """A new node token: 256 bits from ``secrets``, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(GENERATED_TOKEN_BYTES)


class TokenValueError(ValueError):
    """A token value nodes would refuse or mangle. The message never contains the value."""


def check_token_value(raw: str) -> str:
    """A pasted token, trimmed as nodes trim their token file, or TokenValueError: printable
    ASCII without whitespace inside, MIN_TOKEN_CHARS to MAX_TOKEN_BYTES long."""
    token = raw.strip()
    if not token:
        raise TokenValueError("the token is empty")
    if len(token.encode("utf-8")) > MAX_TOKEN_BYTES:
        raise TokenValueError(
            f"the token is {len(token.encode('utf-8'))} bytes long; nodes accept at most "
            f"{MAX_TOKEN_BYTES} bytes"
        )
    if not token.isascii() or not token.isprintable():
        raise TokenValueError(
            "the token may contain printable ASCII characters only (no control characters, "
            "no non-ASCII letters)"
        )
    if any(c.isspace() for c in token):
        raise TokenValueError(
            "the token contains whitespace; the gRPC authorization header would not carry it intact"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenValueError(
            f"the token is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} "
            "(or let the portal generate one)"
        )
    return token


class NodeTokenStore:
    """Current (and during rotation, next) token, plus which one each node accepts.

    ``next_to``, when given, is the set of addresses the next token may be sent to (see
    cluster/node_token.py next_token_recipients); every other address is offered the
    current token only. None: no restriction (a store built from known values)."""

    def __init__(
        self,
        current: str | None,
        next_token: str | None = None,
        *,
        next_to: Iterable[str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._tokens = [NodeToken("current", current)] if current else []
        if next_token:
            self._tokens.append(NodeToken("next", next_token))
        self._next_to = None if next_to is None else frozenset(next_to)
        self._accepted: dict[str, str] = {}

    @property
    def insecure(self) -> bool:
        return not self._tokens

    async def sync(self) -> None:
        """Bring the tokens up to date before a call (this store holds what it was given)."""

    def mark_stale(self) -> None:
        """The tokens changed elsewhere in this process: sync at the next call."""

    def candidates(self, address: str) -> list[NodeToken]:
        """Tokens to try against ``address``, the one it last accepted first; the next
        token only to an address in ``next_to``."""
        with self._lock:
            preferred = self._accepted.get(address)
            tokens = [
                t
                for t in self._tokens
                if t.label != "next" or self._next_to is None or address in self._next_to
            ]
            return sorted(tokens, key=lambda t: t.label != preferred)

    def accepted(self, address: str, label: str, *, limit: int | None = None) -> None:
        """``address`` accepted the ``label`` token. With ``limit``, at most that many nodes
        are remembered (the longest unconfirmed dropped first): addresses come from the
        node-controlled membership."""
        with self._lock:
            self._accepted.pop(address, None)
            self._accepted[address] = label
            while limit is not None and len(self._accepted) > limit:
                del self._accepted[next(iter(self._accepted))]

    def retain(self, addresses: Collection[str]) -> None:
        """Forget the nodes not in ``addresses`` (they left the membership)."""
        with self._lock:
            self._accepted = {a: v for a, v in self._accepted.items() if a in addresses}

    def accepted_label(self, address: str) -> str | None:
        with self._lock:
            return self._accepted.get(address)

    def set_tokens(
        self, current: str | None, next_token: str | None, next_to: Iterable[str] | None = None
    ) -> None:
        """Replace the tokens (and who may be sent next). What a node accepted is kept by
        value: after a rotation finishes, a node that accepted "next" now accepts "current"
        (the same token)."""
        with self._lock:
            before = {t.label: t.value for t in self._tokens}
            self._tokens = [NodeToken("current", current)] if current else []
            if next_token:
                self._tokens.append(NodeToken("next", next_token))
            self._next_to = None if next_to is None else frozenset(next_to)
            label_of = {t.value: t.label for t in self._tokens}
            self._accepted = {
                address: label_of[before[label]]
                for address, label in self._accepted.items()
                if before.get(label) in label_of
            }
