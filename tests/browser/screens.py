"""Screenshots and layout checks shared by the browser tests.

`shoot` writes test-artifacts/screenshots/<name>.png (the whole page unless told
otherwise); `overflowing` lists what sticks out of the window sideways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Every page an operator opens, in the navigation's order: (file name, path).
PAGES = (
    ("overview", "/"),
    ("nodes", "/nodes/"),
    ("raft", "/raft/"),
    ("routes", "/routes/"),
    ("adapters", "/adapters/"),
    ("keyviz", "/keyviz/?live=0"),
    ("hot-ranges", "/keyviz/hot/"),
    ("events", "/events/"),
    ("audit", "/audit/"),
    ("audit-event", "/audit/1/"),
    ("settings", "/settings/"),
    ("node-token", "/settings/node-token/"),
    ("api-tokens", "/account/tokens/"),
    ("mfa", "/account/mfa/"),
    ("not-found", "/no-such-page/"),
)

# Elements whose right edge is past the window or past the box that clips or scrolls them
# sideways (a table scrolling inside its card is fine; the card sticking out is not).
# Fixed elements (the drawer, the skip link) and invisible ones are left out.
_OVERFLOWING = """
() => {
  const out = [];
  const view = document.documentElement.clientWidth;
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || getComputedStyle(el).position === "fixed") continue;
    let clip = null;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).position === "fixed") { clip = "fixed"; break; }
      if (getComputedStyle(up).overflowX !== "visible") { clip = up; break; }
    }
    if (clip === "fixed" || clip) continue;  // scrolls or is clipped inside `clip`
    if (box.right > view + 0.5) {
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
        (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : "");
      out.push(`${name} right=${Math.round(box.right)}`);
    }
  }
  return out;
}
"""


def shoot(page: Any, artifacts_dir: Path, name: str, *, full_page: bool = True) -> Path:
    path = artifacts_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def overflowing(page: Any) -> list[str]:
    found: list[str] = page.evaluate(_OVERFLOWING)
    return found


def rgb(page: Any, selector: str, prop: str = "background-color") -> tuple[int, ...]:
    """The computed colour of the first element matching `selector`, as (r, g, b)."""
    text: str = page.eval_on_selector(
        selector, "(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop
    )
    inner = text[text.index("(") + 1 : text.index(")")]
    return tuple(int(float(v)) for v in inner.replace("/", ",").split(",")[:3])


def is_dark(colour: tuple[int, ...]) -> bool:
    """A background an operator reads as dark (relative luminance well under a half)."""
    r, g, b = (c / 255 for c in colour[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.2


def is_light(colour: tuple[int, ...]) -> bool:
    r, g, b = (c / 255 for c in colour[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.8
