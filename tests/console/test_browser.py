"""The console in a real browser (Debian's chromium, driven by Playwright) against a real server.

- alice signs in by pasting her token, asks the assistant to read a file, approves the
  action from the keyboard, and sees the answer stream; nothing of the token stays in the
  URL, in localStorage or in a script-readable cookie;
- alice asks for a level-2 command whose argument holds ``<script>`` markup: an admin, in a
  second browser context signed in with a one-time link, sees it in the queue (as text:
  no script runs), approves it with a reason, and alice's page goes on;
- alice stops a running turn with the Stop button; after a reload (still signed in) she
  resumes that session from the list of earlier ones and goes on chatting;
- the admin's Approvals page lists, from the audit log, what they decided before;
- the admin's audit page shows those records and "intact"; the pages fit a phone's width;
- a bad token gets a clear message on the sign-in page;
- after a copy of the log is tampered with, the console served from that copy names the
  bad record;
- the Policies page explains a decision, says who can, shows the matrix; the Tools page
  calls a tool from a form generated from its schema, and markup typed into it stays text.

A screenshot of each page is saved under the test's tmp_path.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.auth import AuthSettings, issue
from engine.server import serve
from tests.engine.conftest import SECRET

from .browser import chromium, need_browser, new_page, open_agent, say, sign_in_with_token
from .conftest import Console, server_settings, sign_in

pytestmark = pytest.mark.usefixtures("browser_available")

MARKUP = "<script>alert(1)</script>"


@pytest.fixture
def browser_available() -> None:
    need_browser()


def _fits_width(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def _chat_and_approvals(url: str, alice_token: str, admin_link: str, shots: Path) -> list[str]:
    problems: list[str] = []
    with chromium() as browser:
        alice = new_page(browser, problems)
        sign_in_with_token(alice, url, alice_token)
        assert alice_token not in alice.url
        assert alice.evaluate("localStorage.length + sessionStorage.length") == 0
        assert alice.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
        open_agent(alice)

        # Level 1: alice approves her own read, from the keyboard, and the answer streams in.
        say(alice, "read notes.txt")
        card = alice.locator("li.action", has_text="read_file")
        card.get_by_text("Waiting for your answer").wait_for()
        card.get_by_label("Reason").focus()
        alice.keyboard.type("my own notes")
        alice.keyboard.press("Tab")  # to Approve
        alice.keyboard.press("Enter")
        card.get_by_text("Result: ok").wait_for()
        alice.locator("li.agent", has_text="buy milk").wait_for()
        assert "approval by" in card.inner_text() and "\n1\n" in card.inner_text()
        alice.screenshot(path=str(shots / "chat.png"), full_page=True)

        # Level 2: an admin in another browser context answers from the queue.
        admin = new_page(browser, problems)
        admin.goto(admin_link)
        admin.wait_for_selector("#page-chat:not([hidden])")
        assert "code=" not in admin.url  # the one-time code left the address bar
        admin.get_by_role("link", name="Approvals").click()
        admin.get_by_text("Nothing waits for you.").wait_for()
        say(alice, f"run echo '{MARKUP}'")
        alice.locator("li.action", has_text="Waiting for an admin").wait_for()
        queued = admin.locator("#approvals-queue li", has_text="shell")
        queued.wait_for()
        text = queued.inner_text()
        assert "alice" in text and MARKUP in text and "level 2 requires an admin" in text
        assert admin.locator("#approvals-queue script").count() == 0
        admin.screenshot(path=str(shots / "approvals.png"), full_page=True)
        queued.get_by_label("Reason").fill("harmless echo")
        queued.get_by_role("button", name="Approve").click()
        admin.locator("#approvals-decided li", has_text="approved shell for alice (harmless echo)").wait_for()
        shell = alice.locator("li.action", has_text="shell")
        shell.get_by_text("Result: ok").wait_for()
        alice.locator("li.agent", has_text="exited with 0").wait_for()
        assert alice.locator("#chat-log script").count() == 0
        # "Decided before" comes from the audit log (ISO times) when the page is opened again.
        admin.get_by_role("link", name="Chat").click()
        admin.get_by_role("link", name="Approvals").click()
        admin.locator("#approvals-decided li",
                      has_text=re.compile(r"T\d\d:\d\d:\d\d.*approved shell for alice \(harmless echo\)")).wait_for()
        assert MARKUP in alice.locator("li.agent", has_text="exited with 0").inner_text()

        # Stop: a long command, approved, then alice stops the turn.
        say(alice, "run sleep 30")
        admin.locator("#approvals-queue li", has_text="sleep 30").get_by_role("button", name="Approve").click()
        alice.wait_for_selector("#chat-stop:not([disabled])")
        alice.get_by_role("button", name="Stop").click()
        alice.locator("li.agent", has_text="(stopped)").wait_for()
        alice.wait_for_selector("#chat-stop[disabled]")

        # Resume: after a reload (still signed in: the cookie), the earlier session is offered.
        session_id = re.search(r"Session (\w+) with", alice.locator("#chat-state").inner_text())
        assert session_id is not None
        alice.reload()
        alice.wait_for_selector("#page-chat:not([hidden])")
        alice.locator(f"#chat-session option[value='{session_id[1]}']").wait_for(state="attached")
        alice.get_by_label("Session", exact=True).select_option(session_id[1])
        alice.get_by_role("button", name="Open").click()
        alice.locator("#chat-state", has_text=f"Session {session_id[1]} with assistant: active").wait_for()
        say(alice, "what is 6*7")
        alice.locator("li.agent", has_text="6*7 = 42").wait_for()

        # The audit page: the records of all this, and the verification.
        admin.get_by_role("link", name="Audit").click()
        admin.locator("#audit-verify.ok", has_text="Log intact").wait_for()
        admin.locator("#audit-table tbody tr", has_text="read_file").first.wait_for()
        rows = admin.locator("#audit-table tbody").inner_text()
        for expected in ("read_file", "shell", "approval", "execution", "alice"):
            assert expected in rows, expected
        admin.screenshot(path=str(shots / "audit.png"))
        admin.get_by_label("Kind").select_option("approval")
        admin.get_by_role("button", name="Filter").click()
        admin.locator("#audit-count", has_text="3 records").wait_for()
        admin.locator("#audit-table tbody tr").first.get_by_role("button").click()
        assert '"kind": "approval"' in admin.locator("#audit-details-body").inner_text()

        for page in (alice, admin):
            page.set_viewport_size({"width": 390, "height": 844})
            assert _fits_width(page), "the page is wider than a phone"
        alice.screenshot(path=str(shots / "chat-phone.png"))
    return problems


@pytest.mark.slow
async def test_chat_approvals_and_audit_in_the_browser(console: Console, tmp_path: Path) -> None:
    console.write_notes("buy milk\ncall the plumber\n")
    link = console.link("root-admin", ("admin", "user"))
    problems = await trio.to_thread.run_sync(_chat_and_approvals, console.url, console.token("alice"), link, tmp_path)
    assert problems == []
    for name in ("chat", "approvals", "audit"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def _bad_token(url: str) -> tuple[str, list[str]]:
    problems: list[str] = []
    with chromium() as browser:
        page = new_page(browser, problems)
        page.goto(url)
        page.get_by_label("Your token").fill("eyJhbGciOiJIUzI1NiJ9.bm9wZQ.c2lnbmF0dXJl")
        page.get_by_role("button", name="Sign in").click()
        message = page.locator("#signin-error")
        message.get_by_text("sign-in refused").wait_for()
        assert page.get_by_label("Your token").input_value() == ""
        return message.inner_text(), problems


async def test_bad_token_says_why_on_the_page(console: Console) -> None:
    message, problems = await trio.to_thread.run_sync(_bad_token, console.url)
    assert message.startswith("sign-in refused: ") and problems == []


def _audit_page(link: str, shots: Path) -> tuple[str, str, list[str]]:
    problems: list[str] = []
    with chromium() as browser:
        page = new_page(browser, problems)
        page.goto(link)
        page.get_by_role("link", name="Audit").click()
        page.locator("#audit-verify.bad").wait_for()
        page.locator("#audit-table tbody tr.bad").first.wait_for()
        page.screenshot(path=str(shots / "audit-tampered.png"), full_page=True)
        return page.locator("#audit-verify").inner_text(), page.locator("#audit-table tbody tr.bad").inner_text(), \
            problems


@pytest.mark.slow
async def test_a_tampered_copy_of_the_log_names_the_bad_record(
    start_console: Callable[..., Any], config_dir: Path, state_dir: Path, tmp_path: Path,
) -> None:
    import httpx

    # A log with a few records (refused sign-ins), written by a server that then stops cleanly.
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve, server_settings(config_dir, state_dir))
        async with httpx.AsyncClient(base_url=handle.console.url.rstrip("/"), timeout=10) as http:
            await sign_in(http, issue(AuthSettings(secret=SECRET), "root-admin", ["admin"], 600))
            csrf = (await http.get("/api/csrf")).json()["csrf"]
            for attempt in range(3):
                await http.post("/api/signin", data={"token": f"bad-{attempt}"}, headers={"X-CSRF-Token": csrf})
        handle.stop()
    copy = state_dir.parent / "copy"
    shutil.copytree(state_dir, copy)
    shutil.copytree(state_dir.parent / f"{state_dir.name}-keys", state_dir.parent / "copy-keys")
    # Someone with write access to the copy edits record 2 (its triggers dropped first).
    conn = sqlite3.connect(copy / "audit.db", isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE audit_records SET outcome = 'ok' WHERE seq = 2")
    conn.close()

    console: Console = await start_console(config_dir, copy)
    link = console.link("root-admin", ("admin",))
    verdict, bad_row, problems = await trio.to_thread.run_sync(_audit_page, link, tmp_path)
    assert "Log NOT intact" in verdict and "First bad record: seq 2 (edited)" in verdict
    assert bad_row.startswith("2\t") and problems == []



def _policies_and_tools(link: str, shots: Path) -> list[str]:
    problems: list[str] = []
    with chromium() as browser:
        page = new_page(browser, problems)
        page.goto(link)
        page.get_by_role("link", name="Policies").click()
        page.locator("#policy-matrix tbody tr", has_text="send_payment").wait_for()
        matrix = page.locator("#policy-matrix").inner_text()
        assert "shell\tadmin approves\tadmin approves" in matrix and "send_payment\tdenied\tdenied" in matrix
        assert "Policy revision in force: sha256:" in page.locator("#policy-revision").inner_text()
        page.get_by_label("Subject (sub)").fill("alice")
        page.get_by_label("Roles (comma separated)").fill("user")
        page.locator("#policy-explain").get_by_label("Tool or resource URI").fill("read_file")
        page.get_by_role("button", name="Explain").click()
        page.locator("#policy-explain-result .decision", has_text="require_approval (approver: user)").wait_for()
        # How long such an approval may be remembered, as `sconnect policy explain` says it.
        assert page.locator("#policy-explain-result .remember").inner_text().startswith("Remember: ")
        assert "tools-up-to-level-2" in page.locator("#policy-explain-result table").inner_text()
        page.locator("#policy-who").get_by_label("Tool or resource URI").fill("nosuchtool")
        page.get_by_role("button", name="Who can").click()
        page.locator("#policy-who-result .error", has_text="unknown tool 'nosuchtool'").wait_for()
        page.screenshot(path=str(shots / "policies.png"))

        # A form generated from the tool's schema; markup typed into it comes back as text.
        page.get_by_role("link", name="Tools").click()
        page.get_by_role("button", name="calculator", exact=True).click()
        page.get_by_label("expression (required)").fill("6*7")
        page.get_by_role("button", name="Call calculator").click()
        page.locator("#tools-calls li.action", has_text="calculator").get_by_text('"result": 42').wait_for()
        page.screenshot(path=str(shots / "tools.png"))
        page.get_by_role("button", name="text_stats", exact=True).click()
        page.get_by_label("text (required)").fill(f"hello {MARKUP} <img src=x onerror=alert(2)>")
        page.get_by_role("button", name="Call text_stats").click()
        call = page.locator("#tools-calls li.action", has_text="text_stats")
        call.get_by_text("Result: ok").wait_for()
        assert MARKUP in call.locator("pre.arguments").inner_text()
        assert page.locator("#tools-calls script, #tools-calls img").count() == 0
        page.locator("#resources-list li", has_text="db://users/profile/{id}").wait_for()
    return problems


async def test_policies_and_tools_pages(console: Console, tmp_path: Path) -> None:
    link = console.link("root-admin", ("admin", "user"))
    problems = await trio.to_thread.run_sync(_policies_and_tools, link, tmp_path)
    assert problems == []
