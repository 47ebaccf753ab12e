"""Grants from the terminal: ``sconnect chat`` (the prompt's ``s``, ``/approve --for``,
``/grants``, ``/revoke``) and ``sconnect grants list|revoke``, as real subprocesses
against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import trio

from engine.client import open_client
from engine.protocol import Remember, RememberScope
from tests.conftest import REPO
from tests.engine.conftest import RunningServer
from tests.grants.conftest import ask, result_of

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def _env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCONNECT_TOKEN", "NO_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    env["SCONNECT_TOKEN"] = token
    return env


async def _sconnect(server: RunningServer, *argv: str, stdin: str = "", token: str | None = None
                    ) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "engine", *argv], stdin=stdin.encode(), capture_stdout=True, capture_stderr=True,
        check=False, cwd=REPO, env=_env(token or server.token()),
    )


async def test_the_chat_remembers_lists_and_revokes(server: RunningServer) -> None:
    call = '/call note {"path": "a.txt"}\n'
    # The agent's read (in the chat's session): s = yes, for this session; the same read
    # again runs under the grant. A direct /call has no session: s is refused here and
    # asked again, 1h remembers it for an hour. /grants lists both.
    lines = f"read notes.txt\ns\nread notes.txt\n{call}s\n1h\n{call}/grants\n/quit\n"
    with trio.fail_after(60):
        first = await _sconnect(server, "chat", "--url", server.url, stdin=lines)
        out = first.stdout.decode()
        assert first.returncode == 0, first.stderr.decode()
        assert ("needs approval by user: approve? [y/N] s\napproval sent, asking to remember it (an error follows "
                "if the policy refuses; /grants lists it)\n") in out
        again = out.split("> read notes.txt\n")[2]
        assert again.startswith('[action] read_file {"path": "notes.txt"} level 1 — approved by grant ')
        assert "a direct call belongs to no session: answer a duration such as 1h to remember it\n" in out
        assert 'note {"path": "a.txt"} level 1 — approved by grant ' in out
        listed = out.split("2 grant(s) (/revoke GRANT_ID ends one):\n", 1)[1]
        assert 'note {"path": "a.txt"} (these arguments) for alice, duration (any session), made by alice' in listed
        assert 'read_file {"path": "notes.txt"} (these arguments) for alice, session (session ' in listed
        grant_id = listed.split()[0]
        # A new chat: /revoke ends it, /grants all shows it so, and bad input is answered.
        lines = f"/revoke {grant_id[:8]} done\n/grants all\n/revoke nope\n/approve x --for\n/grants some\n/quit\n"
        second = await _sconnect(server, "chat", "--url", server.url, stdin=lines)
        out = second.stdout.decode()
        assert second.returncode == 0, second.stderr.decode()
        assert f"revoked grant {grant_id} (note)\n" in out
        assert f"{grant_id}  note" in out and ", revoked\n" in out
        assert "[error not_found] no grant 'nope'" in out
        assert "usage: /approve ID [--session | --for DURATION]" in out
        assert "usage: /grants [all]" in out


async def test_the_grants_command_lists_and_revokes(server: RunningServer) -> None:
    with trio.fail_after(60):
        empty = await _sconnect(server, "grants", "list", "--url", server.url)
        assert (empty.returncode, empty.stdout.decode()) == (0, "no grants\n"), empty.stderr.decode()
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, "note", {"path": "c.txt", "size": 1})
            await alice.answer(action.action_id, True, remember=Remember(
                scope=RememberScope.DURATION, duration="1h", match={"path": "same"}))
            await result_of(alice, action)
        listing = await _sconnect(server, "grants", "list", "--url", server.url, "--json")
        assert listing.returncode == 0, listing.stderr.decode()
        [grant] = json.loads(listing.stdout)
        assert (grant["name"], grant["match"], grant["scope"], grant["status"]) == (
            "note", {"path": "same"}, "duration", "live")
        text = (await _sconnect(server, "grants", "list", "--url", server.url)).stdout.decode()
        assert text.startswith(f"{grant['grant_id']}  live\n")
        assert "  alice: note {\"path\": \"c.txt\", \"size\": 1}, matching path=same\n" in text
        assert "  duration (any session), made by alice at " in text
        forbidden = await _sconnect(server, "grants", "revoke", grant["grant_id"], "--url", server.url,
                                    token=server.token("bob"))
        assert forbidden.returncode == 1 and "forbidden" in forbidden.stderr.decode()
        missing = await _sconnect(server, "grants", "revoke", "nope", "--url", server.url)
        # One line naming the refusal, never a traceback.
        assert missing.returncode == 1 and missing.stderr.decode() == "sconnect grants: not_found: no grant 'nope'\n"
        assert forbidden.stderr.decode().count("\n") == 1 and "Traceback" not in forbidden.stderr.decode()
        # A prefix names the grant, as /grants and `grants list` show ids people copy.
        revoked = await _sconnect(server, "grants", "revoke", grant["grant_id"][:8], "--url", server.url,
                                  "--reason", "done")
        assert revoked.returncode == 0 and revoked.stdout.decode() == f"revoked {grant['grant_id']} (note for alice)\n"
        after = await _sconnect(server, "grants", "list", "--url", server.url, "--all", "--json")
        assert [(g["status"], g["end_reason"]) for g in json.loads(after.stdout)] == [("revoked", "done")]
        bad = await _sconnect(server, "grants", "list", "--url", "http://x")
        assert bad.returncode == 2 and "ws:// or wss://" in bad.stderr.decode()
