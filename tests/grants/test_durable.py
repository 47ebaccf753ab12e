"""Grants outlive the server, expire by themselves, and end when a reload changes what they rest on.

- restart: a grant made before a restart covers the same call after it (the store and
  the digest key live in the state directory);
- reload: raising the tool's level, or changing the rule that required the approval,
  ends the grant (listed as ``ended`` with the reason, audited as ``grant.end``); a
  reload that changes neither keeps it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.auth import AuthSettings, issue
from engine.client import open_client
from engine.protocol import Remember, RememberScope, ToolList
from engine.server import ServerSettings, serve
from tests.engine.conftest import SECRET, RunningServer
from tests.grants.conftest import ask, covered, result_of

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
HOUR = Remember(scope=RememberScope.DURATION, duration="1h")


async def _grant(url: str, token: str, name: str, arguments: dict[str, object]) -> str:
    async with open_client(url, token) as alice:
        action = await ask(alice, name, arguments)
        await alice.answer(action.action_id, True, remember=HOUR)
        assert str((await result_of(alice, action)).status) == "ok"
        newest = (await alice.list_grants()).grants[0]
        assert (newest.name, newest.arguments) == (name, {k: "[redacted]" if k == "pin" else v
                                                          for k, v in arguments.items()})
        return newest.grant_id


async def test_a_grant_survives_a_restart(config_dir: Path, state_dir: Path) -> None:
    settings = ServerSettings(config_dir=config_dir, state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0)
    token = issue(settings.auth, "alice", ["user"], 600)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve, settings)
            grant_id = await _grant(handle.websocket, token, "note", {"path": "kept.txt"})
            handle.stop()
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve, settings)
            async with open_client(handle.websocket, token) as alice:
                action = await ask(alice, "note", {"path": "kept.txt"})
                assert action.grant is not None and action.grant.grant_id == grant_id
                assert not action.requires_approval
                await result_of(alice, action)
                assert not await covered(alice, "note", {"path": "other.txt"})
            handle.stop()


async def _reloaded(alice: object) -> None:
    """Until the next tool_list: the server sends one after every successful reload."""
    await alice.next_event_of(ToolList)  # type: ignore[attr-defined]


def _touch_later(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))


async def test_a_reload_raising_the_level_or_changing_the_rule_ends_grants(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    token = server.token()
    with trio.fail_after(40):
        note_grant = await _grant(server.url, token, "note", {"path": "a.txt"})
        vault_grant = await _grant(server.url, token, "vault2", {"path": "a.txt"})
        pin_grant = await _grant(server.url, token, "pin", {"account": "1", "pin": "9"})
        async with open_client(server.url, token) as alice:
            await alice.next_event_of(ToolList)  # the one sent on connecting
            # A change that touches neither: every grant stays.
            calculator = config_dir / "tools.d" / "calculator.yaml"
            calculator.write_text(calculator.read_text().replace("timeout: 5s", "timeout: 6s"))
            _touch_later(calculator)
            await _reloaded(alice)
            assert len((await alice.list_grants()).grants) == 3
            # note: level 1 -> 2 (its grant ends); vault2's rule changes (its grant ends).
            note = config_dir / "tools.d" / "note.yaml"
            note.write_text(note.read_text().replace("permission_level: 1", "permission_level: 2"))
            policy = config_dir / "policies" / "grants.yaml"
            policy.write_text(policy.read_text().replace("remember: {max: 2h}", "remember: {max: 3h}"))
            _touch_later(note)
            await _reloaded(alice)
            listed = {g.grant_id: g for g in (await alice.list_grants(all=True)).grants}
            assert listed[pin_grant].status == "live"
            assert (listed[note_grant].status, listed[note_grant].end_reason) == (
                "ended", "the tool 'note' went from level 1 to 2")
            assert (listed[vault_grant].status, listed[vault_grant].end_reason) == (
                "ended", "the rule 'alice-vault2' that required the approval changed")
            assert not await covered(alice, "vault2", {"path": "a.txt"})
            assert await covered(alice, "pin", {"account": "1", "pin": "9"})
    ended = [r.to_dict() for r in query(server.settings.state_dir, kind="grant") if r.action == "grant.end"]
    assert sorted(r["details"]["grant_id"] for r in ended) == sorted([note_grant, vault_grant])
    assert all(r["outcome"] == "ended" and r["details"]["reason"] for r in ended)


async def test_an_expired_grant_covers_nothing(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, "note", {"path": "a.txt"})
            short = Remember(scope=RememberScope.DURATION, duration="200ms")
            await alice.answer(action.action_id, True, remember=short)
            await result_of(alice, action)
            # Waits for the grant's own end (a condition, polled a bounded number of times).
            for _ in range(200):
                if not (await alice.list_grants()).grants:
                    break
                await trio.sleep(0.05)
            [expired] = (await alice.list_grants(all=True)).grants
            assert (expired.status, expired.expires_in_s) == ("expired", 0.0)
            assert not await covered(alice, "note", {"path": "a.txt"})
