"""Readable previews of raw keys (route and bucket boundaries are raw bytes).

Used by the heatmap and the Routes page, so both show a key the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyviz.families import match_family

# elastickv's internal key spaces; shown with a label so operators do not
# mistake them for user data.
RESERVED_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"!txn|", "transaction metadata"),
    (b"!dist|", "distribution catalog"),
    (b"!admin|", "admin metadata"),
)

MAX_PREVIEW_BYTES = 64


@dataclass(frozen=True, slots=True)
class KeyPreview:
    """How to show a key.

    `text` is the whole preview (reserved prefix included). `reserved_prefix`
    and `reserved_label` name the internal key space, if any. `is_hex` says the
    part after the prefix was not printable UTF-8 and is shown as `0x...`.
    `truncated` says the key was longer than the preview. `label` reads the
    key by its family (keyviz/families.py), e.g. "DynamoDB table orders";
    None outside the known families, where `text` is what to show.
    """

    text: str
    reserved_prefix: str | None = None
    reserved_label: str | None = None
    is_hex: bool = False
    is_infinite: bool = False
    truncated: bool = False
    label: str | None = None
    family: str | None = None


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def key_preview(
    key: bytes, *, is_end: bool = False, max_bytes: int = MAX_PREVIEW_BYTES
) -> KeyPreview:
    """Preview `key`: printable UTF-8 as text, else hex; empty start/end as -inf/+inf.

    Keys longer than `max_bytes` are cut (an ellipsis marks it); hex never
    splits a byte and text never splits a character.
    """
    if not key:
        return KeyPreview(text="+inf" if is_end else "-inf", is_infinite=True)
    prefix, label = b"", None
    for candidate, name in RESERVED_PREFIXES:
        if key.startswith(candidate):
            prefix, label = candidate, name
            break
    rest = key[len(prefix) :]
    truncated = len(key) > max_bytes
    body, is_hex = _body(rest, max(0, max_bytes - len(prefix)))
    family_label, family = _family_label(key, max_bytes)
    return KeyPreview(
        text=prefix.decode("ascii") + body + ("…" if truncated else ""),
        reserved_prefix=prefix.decode("ascii") if prefix else None,
        reserved_label=label,
        is_hex=is_hex,
        truncated=truncated,
        label=family_label,
        family=family,
    )


def _body(rest: bytes, budget: int) -> tuple[str, bool]:
    """The first `budget` bytes of `rest` as text, else hex; and whether it is hex."""
    cut = rest[:budget]
    text = _printable(cut)
    if text is None and len(rest) > budget:
        # The cut may split a multi-byte character; drop up to 3 trailing bytes.
        for back in (1, 2, 3):
            if len(cut) > back and (text := _printable(cut[:-back])) is not None:
                cut = cut[:-back]
                break
    if text is None:
        return "0x" + cut.hex(), bool(rest)
    return text, False


def _family_label(key: bytes, max_bytes: int) -> tuple[str | None, str | None]:
    """`key` read by its family ("Redis string k"), and the family; (None, None) if none."""
    hit = match_family(key)
    if hit is None:
        return None, None
    fam, rest = hit
    if fam.rest == "none" or not rest:
        return fam.name, fam.family
    body, _ = _body(rest, max_bytes)
    if fam.rest == "path":
        body = body.replace("|", "/", 1)  # bucket|object -> bucket/object
    return f"{fam.name} {body}{'…' if len(rest) > max_bytes else ''}", fam.family
