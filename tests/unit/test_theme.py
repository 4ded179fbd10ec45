"""The theme: every colour of the chrome is a CSS variable with a light and a dark value,
the dark values are the same for the toggle and for prefers-color-scheme, and the toggle's
cookie reaches <html data-theme> only as one of the two theme names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from elastickv_admin.context import THEME_COOKIE

CSS = (Path(__file__).resolve().parents[2] / "static" / "css" / "portal.css").read_text()
DECLARATION = re.compile(r"(--[\w-]+)\s*:\s*([^;]+);")
COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b|rgba?\(")


def _block(opening: str) -> str:
    """The declarations between `opening` and its closing brace."""
    start = CSS.index(opening) + len(opening)
    return CSS[start : CSS.index("}", start)]


def _variables(block: str) -> dict[str, str]:
    return {name: value.strip() for name, value in DECLARATION.findall(block)}


LIGHT = _variables(_block(":root {"))
TOGGLED_DARK = _variables(_block(":root[data-theme=dark] {"))
SYSTEM_DARK = _variables(_block(":root:not([data-theme=light]) {"))


def test_the_toggles_dark_theme_is_the_browsers_dark_theme():
    assert TOGGLED_DARK
    assert TOGGLED_DARK == SYSTEM_DARK


def test_every_light_colour_variable_has_a_dark_value():
    colours = {name for name, value in LIGHT.items() if COLOUR.search(value)}
    assert colours
    assert colours - TOGGLED_DARK.keys() == set()


def test_the_heatmaps_canvas_colours_have_dark_values():
    # static/js/heatmap.js reads them (the :root block under "heatmap").
    names = {"--kv-bg", "--kv-ink", "--kv-muted", "--kv-faint", "--kv-accent", "--kv-pinned"}
    assert names - TOGGLED_DARK.keys() == set()


def test_no_page_rule_hard_codes_a_colour():
    """Outside the variable blocks only the Key Visualizer's always-dark panel, the logo's
    gradient and the QR code's white (a scanner needs it) may name a colour."""
    start, end = CSS.index("/* == Key Visualizer"), CSS.index("/* == end Key Visualizer")
    rules = CSS[:start] + CSS[end:]
    offenders = []
    for line in rules.splitlines():
        stripped = line.strip()
        if stripped.startswith(("--", "/*", "color-scheme")) or not COLOUR.search(stripped):
            continue
        if stripped.startswith((".brand-mark", ".qr ")):
            continue
        offenders.append(stripped[:80])
    assert offenders == []


@pytest.mark.django_db
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_chosen_theme_is_written_into_the_page_before_it_paints(theme: str):
    client = Client()
    client.cookies[THEME_COOKIE] = theme
    text = client.get("/login/").content.decode()
    assert f'<html lang="en" data-theme="{theme}">' in text


@pytest.mark.django_db
@pytest.mark.parametrize("value", ['dark" onload="x', "<script>", "blue", ""])
def test_a_forged_theme_cookie_never_reaches_the_page(value: str):
    client = Client()
    client.cookies[THEME_COOKIE] = value
    text = client.get("/login/").content.decode()
    assert '<html lang="en">' in text
    assert "onload" not in text
    assert "blue" not in text
