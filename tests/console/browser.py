"""Driving Debian's chromium with Playwright's sync API (run in a worker thread by the trio tests).

Browsers are never downloaded: the tests use /usr/bin/chromium (``apt-get install chromium``)
and skip, saying so, when it or the playwright package is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses; --no-sandbox because tests may run as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1100, "height": 800}
# Every wait in the page is bounded (ms): a scenario fails, it never hangs.
WAIT_MS = 20_000


def need_browser() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, problems: list[str]) -> Any:
    """A page in its own context (its own cookies); script errors and dialogs land in ``problems``."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def dialog(d: Any) -> None:
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    return page


def sign_in_with_token(page: Any, url: str, token: str) -> None:
    page.goto(url)
    page.get_by_label("Your token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#page-chat:not([hidden])")


def open_agent(page: Any, agent: str = "assistant") -> None:
    page.wait_for_function("document.querySelector('#chat-agent').options.length > 0")
    page.get_by_label("Agent").select_option(agent)
    page.get_by_role("button", name="Open").click()
    page.wait_for_selector("#chat-input:not([disabled])")


def say(page: Any, text: str) -> None:
    # A turn's tool result shows before its answer ends the turn; until then Send is disabled
    # and Enter submits nothing (the message would be lost): wait for the session to be idle.
    page.locator("#chat-submit:enabled").wait_for()
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")
