"""Query parameters of the Routes page and `GET /api/routes`, parsed and validated.

`?group=<id>&prefix=<key prefix>&sort=<key>|-<key>`

- `group`: a Raft group id (whole number from 1); only that group's routes.
- `prefix`: routes whose range holds keys starting with it. Text as typed (UTF-8), or
  `0x` followed by hex digits for raw bytes, the way the page shows binary keys.
- `sort`: one of ROUTE_SORT_KEYS, `-` in front for descending; default `start` (key order).

The API answers the first bad parameter with a 400 naming it; the page shows every
error beside the form and renders with that parameter left at its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cluster.aggregate import ROUTE_SORT_KEYS
from elastickv_admin.lib.errors import ParamError

MAX_PREFIX_BYTES = 1024
MAX_GROUP_ID = 2**64 - 1
_DIGITS = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(r"0x([0-9a-fA-F]*)")


@dataclass(frozen=True, slots=True)
class RouteQuery:
    group: int | None = None
    prefix: bytes = b""
    prefix_input: str = ""  # as the operator typed it, to put back into the form
    sort: str = "start"
    descending: bool = False

    @property
    def sort_param(self) -> str:
        return ("-" if self.descending else "") + self.sort

    @property
    def filtered(self) -> bool:
        return self.group is not None or bool(self.prefix)


def _group(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_GROUP_ID:
        raise ParamError("group", f"must be a Raft group id (a whole number from 1), got {raw!r}")
    return int(raw)


def _prefix(raw: str) -> bytes:
    hexed = _HEX.fullmatch(raw)
    if hexed:
        digits = hexed.group(1)
        if len(digits) % 2:
            raise ParamError(
                "prefix", f"hex needs two digits per byte, got {len(digits)} digits in {raw!r}"
            )
        value = bytes.fromhex(digits)
    else:
        value = raw.encode("utf-8")
    if len(value) > MAX_PREFIX_BYTES:
        raise ParamError("prefix", f"must be at most {MAX_PREFIX_BYTES} bytes, got {len(value)}")
    return value


def _sort(raw: str) -> tuple[str, bool]:
    raw = raw.strip()
    if not raw:
        return "start", False
    descending = raw.startswith("-")
    key = raw[1:] if descending else raw
    if key not in ROUTE_SORT_KEYS:
        allowed = ", ".join(ROUTE_SORT_KEYS)
        raise ParamError("sort", f"must be one of {allowed} (with - for descending), got {raw!r}")
    return key, descending


def parse_route_query_lenient(query: Mapping[str, str]) -> tuple[RouteQuery, list[ParamError]]:
    """Every parameter parsed on its own; a bad one is reported and left at its default."""
    errors: list[ParamError] = []
    group: int | None = None
    prefix, prefix_input = b"", ""
    sort, descending = "start", False
    try:
        group = _group(query.get("group", ""))
    except ParamError as exc:
        errors.append(exc)
    try:
        prefix_input = query.get("prefix", "")
        prefix = _prefix(prefix_input)
    except ParamError as exc:
        errors.append(exc)
    try:
        sort, descending = _sort(query.get("sort", ""))
    except ParamError as exc:
        errors.append(exc)
    return RouteQuery(group, prefix, prefix_input, sort, descending), errors


def parse_route_query(query: Mapping[str, str]) -> RouteQuery:
    """The query, or ParamError for the first bad parameter."""
    parsed, errors = parse_route_query_lenient(query)
    if errors:
        raise errors[0]
    return parsed
