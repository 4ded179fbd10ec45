"""The dark theme in real Chromium: the sidebar's toggle switches it, the choice outlives a
reload (the server paints it from the cookie), and a browser that prefers dark gets it
without touching the toggle. Computed colours, not only attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.screens import is_dark, is_light, rgb, shoot
from tests.conftest import open_page

pytestmark = pytest.mark.browser


@pytest.fixture
def portal(portal_factory: Any) -> Any:
    return portal_factory(["--nodes", "127.0.0.1:1", "--adminInsecureNoAuth"])


@pytest.fixture
def light_browser_page(browser: Any) -> Iterator[Any]:
    yield from open_page(browser, color_scheme="light")


@pytest.fixture
def dark_browser_page(browser: Any) -> Iterator[Any]:
    yield from open_page(browser, color_scheme="dark")


def colours(page: Any) -> dict[str, tuple[int, ...]]:
    return {
        "page": rgb(page, "body"),
        "card": rgb(page, ".card, form.filters"),
        "ink": rgb(page, "body", "color"),
    }


def test_the_toggle_switches_to_dark_and_the_choice_outlives_a_reload(
    portal, light_browser_page, artifacts_dir
):
    page = light_browser_page
    portal.login(page)
    page.goto(portal.url + "/audit/")
    before = colours(page)
    assert is_light(before["page"])
    assert is_light(before["card"])
    toggle = page.locator("#theme-toggle")
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    after = colours(page)
    assert is_dark(after["page"])
    assert is_dark(after["card"])
    assert is_light(after["ink"])  # the text turned light with it
    assert toggle.get_attribute("aria-pressed") == "true"
    shoot(page, artifacts_dir, "theme-toggled-dark")

    # Reloaded, the server writes the choice into <html>: dark from the first paint.
    response = page.reload()
    assert '<html lang="en" data-theme="dark">' in response.text()
    assert is_dark(rgb(page, "body"))
    # Remembered for the sign-in page too, and back to light on a second click.
    page.goto(portal.url + "/settings/")
    assert is_dark(rgb(page, ".card"))
    page.locator("#theme-toggle").click()
    page.reload()
    assert is_light(rgb(page, "body"))
    assert page.console_errors == []


def test_a_browser_preferring_dark_gets_the_dark_theme_without_the_toggle(
    portal, dark_browser_page, artifacts_dir
):
    page = dark_browser_page
    response = page.goto(portal.url + "/login/")
    assert "data-theme" not in response.text().split("<head>", 1)[0]  # no choice made
    assert is_dark(rgb(page, ".auth-card"))
    shoot(page, artifacts_dir, "theme-system-dark-login")
    portal.login(page)
    page.goto(portal.url + "/audit/")
    assert is_dark(rgb(page, "body"))
    assert is_dark(rgb(page, ".card, form.filters"))
    assert page.locator("#theme-toggle").get_attribute("aria-pressed") == "true"
    # The toggle overrides the browser's preference: light, remembered.
    page.locator("#theme-toggle").click()
    assert is_light(rgb(page, "body"))
    page.reload()
    assert is_light(rgb(page, "body"))
    assert page.console_errors == []
