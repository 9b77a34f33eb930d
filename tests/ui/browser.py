"""Headless Chromium for the web UI's test: Debian's ``/usr/bin/chromium`` driven by Playwright.

Playwright never downloads a browser here: it launches the system one (``$DURABLE_CHROMIUM`` names another
binary). Without Playwright or without the binary the tests are skipped with the reason. Screenshots go to
the test's own directory, and also to ``$DURABLE_UI_SCREENSHOTS`` (e.g. ``docs/images``, relative to the
repository) when it is set: that is how docs/images/ui-*.png are made.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect, Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DURABLE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS_ENV = "DURABLE_UI_SCREENSHOTS"
#: Big enough for the list and a timeline without scrolling; what docs/images shows.
VIEWPORT = {"width": 1280, "height": 860}


def require_browser() -> None:
    """Skip the calling test, with the reason, unless Playwright and Chromium are both installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]' installs it)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y --no-install-recommends chromium)")


@contextmanager
def chromium_page(color_scheme: str = "light") -> Iterator[Page]:
    """A fresh page in headless Chromium; the browser is closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(
                viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
                color_scheme="dark" if color_scheme == "dark" else "light",
                locale="en-GB",
            )
            context.set_default_timeout(10_000)
            page = context.new_page()
            yield page
        finally:
            browser.close()


def screenshot(page: Page, name: str, workdir: Path) -> Path:
    """The page as ``name`` in ``workdir``, copied into ``$DURABLE_UI_SCREENSHOTS`` when it is set."""
    path = workdir / name
    # The whole page down to the end of its content (not the empty rest of the window).
    bottom: float = page.evaluate(
        "() => Math.max(...[...document.querySelector('main').children]"
        ".map(e => e.getBoundingClientRect().bottom + window.scrollY))"
    )
    clip: FloatRect = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": int(bottom) + 24}
    page.screenshot(path=str(path), full_page=True, clip=clip, animations="disabled", caret="hide")
    target = os.environ.get(SCREENSHOTS_ENV)
    if target:
        directory = ROOT / target
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)
    return path
