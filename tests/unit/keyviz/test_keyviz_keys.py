"""Key previews: text when printable, hex otherwise, infinities, reserved prefixes."""

from __future__ import annotations

import pytest

from keyviz.keys import KeyPreview, key_preview


def test_printable_utf8_key_is_shown_as_text() -> None:
    assert key_preview(b"user:42") == KeyPreview(text="user:42")
    assert key_preview("café/ü".encode()).text == "café/ü"


def test_binary_key_is_shown_as_hex() -> None:
    assert key_preview(b"\x00\xff\x10") == KeyPreview(text="0x00ff10", is_hex=True)


def test_utf8_with_control_characters_is_shown_as_hex() -> None:
    assert key_preview(b"a\nb") == KeyPreview(text="0x610a62", is_hex=True)


def test_empty_start_is_minus_infinity_and_empty_end_plus_infinity() -> None:
    assert key_preview(b"") == KeyPreview(text="-inf", is_infinite=True)
    assert key_preview(b"", is_end=True) == KeyPreview(text="+inf", is_infinite=True)
    assert key_preview(b"k", is_end=True).text == "k"


@pytest.mark.parametrize(
    ("key", "prefix", "label"),
    [
        (b"!txn|lock|k1", "!txn|", "transaction metadata"),
        (b"!dist|route/7", "!dist|", "distribution catalog"),
        (b"!admin|token", "!admin|", "admin metadata"),
    ],
)
def test_reserved_prefixes_are_labelled(key: bytes, prefix: str, label: str) -> None:
    p = key_preview(key)
    assert (p.text, p.reserved_prefix, p.reserved_label, p.is_hex) == (
        key.decode(),
        prefix,
        label,
        False,
    )


def test_reserved_prefix_with_a_binary_rest_shows_hex_after_the_prefix() -> None:
    p = key_preview(b"!txn|\x00\x01")
    assert (p.text, p.reserved_prefix, p.is_hex) == ("!txn|0x0001", "!txn|", True)


def test_almost_reserved_prefix_is_plain_text() -> None:
    assert key_preview(b"!txn-x").reserved_prefix is None


def test_long_text_key_is_cut_with_an_ellipsis() -> None:
    p = key_preview(b"a" * 100, max_bytes=10)
    assert (p.text, p.truncated) == ("a" * 10 + "…", True)


def test_long_binary_key_is_cut_on_a_byte() -> None:
    p = key_preview(b"\xff" * 100, max_bytes=4)
    assert (p.text, p.is_hex, p.truncated) == ("0xffffffff…", True, True)


def test_cut_never_splits_a_utf8_character() -> None:
    # "é" is two bytes; a 4-byte cut of "aaaé" would split it.
    p = key_preview("aaaéz".encode(), max_bytes=4)
    assert (p.text, p.is_hex) == ("aaa…", False)
