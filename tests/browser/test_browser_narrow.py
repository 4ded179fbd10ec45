"""Every page at 1440 and 1024 px, light and dark: at 1024 px nothing sticks out of the
window (wide tables scroll inside their card), and each page is painted in the theme the
browser prefers (prefers-color-scheme, no toggle used).

Screenshots of every page land in test-artifacts/screenshots/ as
pages-<width>-<theme>-<page>.png (README "Screenshots" picks from them).
"""

from __future__ import annotations

import pytest

from devcluster import Op
from tests.browser.screens import PAGES, is_dark, is_light, overflowing, rgb, shoot
from tests.browser.test_browser_cluster import TRAFFIC, serve
from tests.browser.test_browser_keyviz import ready

pytestmark = pytest.mark.browser

NARROW = 1024
WIDTHS = (1440, NARROW)
THEMES = ("light", "dark")


def test_every_page_fits_1024_px_and_follows_the_browsers_theme(
    portal_factory, browser, artifacts_dir, devcluster_factory, tmp_path
):
    cluster = devcluster_factory(profile="design")
    cluster.inject([*TRAFFIC, Op("n2", "write", b"session:9", size=300, adapter="sqs", count=8)])
    portal = serve(portal_factory, cluster, tmp_path)
    signed_in = None
    wide: dict[str, list[str]] = {}
    wrong_theme: dict[str, tuple[int, ...]] = {}
    errors: list[str] = []
    for width in WIDTHS:
        for theme in THEMES:
            context = browser.new_context(
                viewport={"width": width, "height": 900}, color_scheme=theme
            )
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(portal.url + "/login/")
            shoot(page, artifacts_dir, f"pages-{width}-{theme}-login")
            portal.login(page)
            signed_in = signed_in or context.storage_state()
            for name, path in PAGES:
                page.goto(portal.url + path)
                page.wait_for_load_state("networkidle")
                if name == "keyviz":
                    ready(page)
                shot = f"pages-{width}-{theme}-{name}"
                shoot(page, artifacts_dir, shot)
                background = rgb(page, "body")
                if not (is_dark(background) if theme == "dark" else is_light(background)):
                    wrong_theme[shot] = background
                if width == NARROW and (sticking_out := overflowing(page)):
                    wide[name] = sticking_out[:5]
            context.close()
    assert wide == {}
    assert wrong_theme == {}
    assert errors == []
