"""The one settings reader: typed access to environment variables.

Every knob the portal has is read here (settings.py calls these helpers), so a
bad value is a startup error that names the variable, never a silent default.
Secrets may come from ``NAME`` or from a file named by ``NAME_FILE``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(raw: str) -> float:
    """'15s', '500ms', '2m', '1h', '7d' or a bare number of seconds -> seconds."""
    match = _DURATION.match(raw.strip().lower())
    if not match:
        raise ValueError(f"not a duration: {raw!r} (use e.g. 15s, 500ms, 2m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def env_duration(name: str, default_seconds: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default_seconds
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def env_parsed(name: str, default: str, parse: Callable[[str], T]) -> T:
    """``parse`` of the variable (or of ``default`` when unset or blank); the
    ValueError it raises becomes a startup error naming the variable."""
    raw = os.environ.get(name)
    text = raw.strip() if raw is not None and raw.strip() else default
    try:
        return parse(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_old_keys(name: str) -> list[str]:
    """Previous keys still accepted while a rotation finishes: ``NAME`` or ``NAME_FILE``,
    comma- or newline-separated (the ``*_OLD_KEYS`` variables)."""
    raw = env_secret(name) or ""
    return [key.strip() for key in raw.replace("\n", ",").split(",") if key.strip()]


def env_secret(name: str) -> str | None:
    """``NAME`` or the contents of the file named by ``NAME_FILE`` (trimmed)."""
    path = os.environ.get(f"{name}_FILE", "").strip()
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE names {path!r}, which cannot be read: {exc.strerror}"
            ) from None
        if not value:
            raise ImproperlyConfigured(f"{name}_FILE names {path!r}, which is empty")
        return value
    value = os.environ.get(name, "").strip()
    return value or None
