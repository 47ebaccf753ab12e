"""The Policies page says which configuration serves: its policy revision, when it was
loaded, and the errors of a refused reload (issue 16), in a real browser (chromium).

- test_a_reload_updates_the_page: an admin opens Policies; the policy file is edited
  while the server runs; after the hot reload the page shows a new revision and a later
  load time; then a tool file is broken: the page says the last reload was refused, when,
  with the file, line and error, and the old revision still in force.

A screenshot of the refused-reload state is saved under the test's tmp_path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from .browser import chromium, need_browser, new_page
from .conftest import Console

pytestmark = pytest.mark.usefixtures("browser_available")


@pytest.fixture
def browser_available() -> None:
    need_browser()


def _touch_later(path: Path) -> None:
    # Coarse mtimes on some filesystems: make sure the watcher sees the change.
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))


def _shown(page: Any, condition: Callable[[Any], bool]) -> bool:
    """Re-open Policies (it reads the state on showing) until `condition(page)`; bounded."""
    for _ in range(200):
        page.get_by_role("link", name="Tools").click()
        page.get_by_role("link", name="Policies").click()
        page.locator("#policy-revision #loaded-at").wait_for()
        if condition(page):
            return True
        page.wait_for_timeout(50)
    return False


def _reloads(link: str, config: Path, shots: Path) -> list[str]:
    problems: list[str] = []
    with chromium() as browser:
        page = new_page(browser, problems)
        page.goto(link)
        page.get_by_role("link", name="Policies").click()
        box = page.locator("#policy-revision")
        box.locator("#loaded-at").wait_for()
        first_text = box.inner_text()
        first_loaded = box.locator("#loaded-at").get_attribute("datetime")
        assert "Policy revision in force: sha256:" in first_text and "configuration loaded" in first_text
        assert box.locator("#refused-at").count() == 0

        policy = config / "policies" / "default.yaml"
        policy.write_text(policy.read_text() + "\n# edited while the server runs\n")
        _touch_later(policy)
        assert _shown(page, lambda p: p.locator("#loaded-at").get_attribute("datetime") != first_loaded)
        second_text = box.inner_text()
        second_loaded = box.locator("#loaded-at").get_attribute("datetime")
        assert second_loaded is not None and first_loaded is not None and second_loaded > first_loaded
        revision = second_text.split("Policy revision in force: ")[1].split()[0]
        assert revision not in first_text  # the edited policy file is a new revision
        assert box.locator("#refused-at").count() == 0

        calculator = config / "tools.d" / "calculator.yaml"
        calculator.write_text(calculator.read_text().replace("timeout: 5s", "timeout: 5 parsecs"))
        _touch_later(calculator)
        assert _shown(page, lambda p: p.locator("#refused-at").count() == 1)
        errors = box.locator("ul.reload-errors").inner_text()
        assert "tools.d/calculator.yaml" in errors and "parsecs" in errors
        assert "was refused; the configuration above still serves" in box.inner_text()
        assert f"Policy revision in force: {revision}" in box.inner_text()
        assert box.locator("#loaded-at").get_attribute("datetime") == second_loaded
        refused = box.locator("#refused-at").get_attribute("datetime")
        assert refused is not None and refused >= second_loaded
        page.screenshot(path=str(shots / "policies-reload-refused.png"))
    return problems


async def test_a_reload_updates_the_page(start_console: Callable[..., Any], config_dir: Path,
                                         state_dir: Path, tmp_path: Path) -> None:
    console: Console = await start_console(config_dir, state_dir, reload_interval_s=0.1)
    link = console.link("root-admin", ("admin",))
    problems = await trio.to_thread.run_sync(_reloads, link, config_dir, tmp_path)
    assert problems == []
