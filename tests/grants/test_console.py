"""Remembering approvals in the console, in a real browser (chromium via Playwright):

- alice reads her notes through the assistant, approves with "Remember: for this
  session"; the same read again runs at once, its card naming the grant;
- alice asks for a level-2 command; the admin, on the Approvals page, approves it
  "for 1 hour" reaching "command running echo"; alice's next echo runs at once, and
  a command with another program still waits for an admin; the admin's list of
  remembered approvals shows both grants, and after Revoke an echo waits again;
- a remember the policy refuses (``secretive``: ``remember: never``) shows the server's
  message and leaves the action waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.console.browser import chromium, need_browser, new_page, open_agent, say, sign_in_with_token
from tests.console.conftest import Console
from tests.console.conftest import console as console  # noqa: F401 - fixtures
from tests.console.conftest import start_console as start_console  # noqa: F401
from tests.engine.conftest import state_dir as state_dir  # noqa: F401

pytestmark = [pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning"), pytest.mark.slow]


@pytest.fixture(autouse=True)
def browser_available() -> None:
    need_browser()


def _remember_in_the_browser(url: str, alice_token: str, admin_link: str, shots: Path) -> list[str]:
    problems: list[str] = []
    with chromium() as browser:
        alice = new_page(browser, problems)
        sign_in_with_token(alice, url, alice_token)
        open_agent(alice)
        say(alice, "read notes.txt")
        card = alice.locator("li.action", has_text="read_file").first
        card.get_by_text("Waiting for your answer").wait_for()
        card.get_by_label("Remember").select_option("session")
        card.get_by_role("button", name="Approve").click()
        card.get_by_text("Result: ok").wait_for()
        assert "Approved and remembered by you" not in card.inner_text()  # replaced by the result
        say(alice, "read notes.txt")
        covered = alice.locator("li.action", has_text="read_file").nth(1)
        covered.get_by_text("Result: ok").wait_for()
        text = covered.inner_text()
        assert "nobody: grant " in text and " of alice (remembered)" in text
        assert covered.get_by_role("button", name="Approve").count() == 0
        alice.screenshot(path=str(shots / "remembered.png"), full_page=True)

        admin = new_page(browser, problems)
        admin.goto(admin_link)
        admin.wait_for_selector("#page-chat:not([hidden])")
        admin.get_by_role("link", name="Approvals").click()
        admin.get_by_text("Nothing waits for you.").wait_for()
        say(alice, "run echo first")
        queued = admin.locator("#approvals-queue li", has_text="echo first")
        queued.wait_for()
        # Past the policy's bound for an admin's approval (1h): refused on the card, nothing decided.
        queued.get_by_label("Remember").select_option("8h")
        queued.get_by_role("button", name="Approve").click()
        queued.get_by_role("alert").get_by_text("Not taken: forbidden").wait_for()
        assert admin.locator("#approvals-decided li", has_text="echo first").count() == 0
        assert admin.locator("#approvals-decided li", has_text="approved shell for alice and remembered").count() == 0
        queued.get_by_label("Remember").select_option("1h")
        queued.get_by_label("Reach").select_option("program:command")
        queued.get_by_role("button", name="Approve").click()
        admin.locator("#approvals-decided li", has_text="approved shell for alice and remembered").wait_for()
        alice.locator("li.action", has_text="echo first").get_by_text("Result: ok").wait_for()
        say(alice, "run echo second")
        second = alice.locator("li.action", has_text="echo second")
        second.get_by_text("Result: ok").wait_for()
        assert "(remembered)" in second.inner_text()
        say(alice, "run date")
        alice.locator("li.action", has_text="date").get_by_text("Waiting for an admin").wait_for()
        admin.locator("#approvals-queue li", has_text="date").get_by_role("button", name="Deny").click()
        alice.locator("li.action", has_text="date").get_by_text("Result: denied").wait_for()
        # The admin's list of remembered approvals: alice's two grants; revoking the echo one.
        admin.get_by_role("button", name="Refresh").click()
        admin.get_by_text("2 remembered approvals.").wait_for()
        shell = admin.locator("#approvals-grants li", has_text="shell")
        assert "command: program" in shell.inner_text() and "root-admin" in shell.inner_text()
        admin.screenshot(path=str(shots / "approvals-remember.png"), full_page=True)
        shell.get_by_role("button", name="Revoke shell for alice").click()
        admin.get_by_text("1 remembered approval.").wait_for()
        say(alice, "run echo third")
        alice.locator("li.action", has_text="echo third").get_by_text("Waiting for an admin").wait_for()
        admin.locator("#approvals-queue li", has_text="echo third").get_by_role("button", name="Deny").click()
        alice.locator("li.action", has_text="echo third").get_by_text("Result: denied").wait_for()
    return problems


async def test_remembering_from_the_chat_and_the_approvals_page(console: Console, tmp_path: Path) -> None:  # noqa: F811
    console.write_notes("buy milk\n")
    link = console.link("root-admin", ("admin", "user"))
    problems = await trio.to_thread.run_sync(
        _remember_in_the_browser, console.url, console.token("alice"), link, tmp_path)
    assert problems == []


def _refused(url: str, token: str) -> tuple[list[str], str]:
    problems: list[str] = []
    with chromium() as browser:
        page = new_page(browser, problems)
        sign_in_with_token(page, url, token)
        open_agent(page)
        say(page, "read notes.txt")
        card = page.locator("li.action", has_text="read_file")
        card.get_by_text("Waiting for your answer").wait_for()
        card.get_by_label("Remember").select_option("8h")
        card.get_by_label("Reach").select_option("same:path")
        card.get_by_role("button", name="Approve").click()
        refused = card.get_by_text("Refused: ")
        refused.wait_for()
        message = card.inner_text()
        # Answered again, plainly: it runs.
        card.get_by_label("Remember").select_option("")
        card.get_by_role("button", name="Approve").click()
        card.get_by_text("Result: ok").wait_for()
        return problems, message


async def test_a_refused_remember_leaves_the_action_waiting(start_console: Any, config_dir: Path,  # noqa: F811
                                                             state_dir: Path) -> None:
    policy = config_dir / "policies" / "grants.yaml"
    policy.write_text(policy.read_text() + """\
  - id: reads-remembered-briefly
    effect: allow
    subjects: {roles: [user]}
    targets: {tools: [read_file]}
    remember: {max: 1h}
""")
    console = await start_console(config_dir, state_dir)
    console.write_notes("buy milk\n")
    problems, message = await trio.to_thread.run_sync(_refused, console.url, console.token("alice"))
    assert problems == []
    assert ("duration 8h is longer than this approval may be remembered: up to 1h "
            "(rule reads-remembered-briefly") in message
