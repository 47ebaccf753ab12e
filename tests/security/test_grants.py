"""Attacks on remembered approvals (grants): each one is performed against a real server.

- ``test_a_grant_never_covers_other_arguments``: after alice's grant for ``note`` with
  exactly ``{"path": "a.txt"}``, calls with an added argument, a path that only looks
  alike (a trailing space, ``./a.txt``, ``a.txt/../a.txt``), another type for the value,
  and another tool all still ask.
- ``test_a_match_never_covers_more_than_confirmed``: a grant pinning ``command`` by its
  program (``ls``) is tried with shell tricks that start with ``ls`` (``;``, ``&&``,
  ``|``, ``$()``, backticks, a newline, redirections, globs, quotes) and with programs
  that only start alike: each asks the admin again.
- ``test_a_grant_never_covers_another_subject``: bob calls exactly what alice's grant
  covers (in a direct call and in his own session): he is asked; bob's attempt to make
  a grant by answering alice's pending action with ``remember`` is ``forbidden`` and
  leaves nothing remembered; bob cannot list alice's session's grants (``forbidden``).
- ``test_a_session_grant_never_covers_another_session``: the same call in alice's
  second session, in a resumed copy of another session id she does not own, and as a
  direct call: asked each time.
- ``test_an_expired_grant_covers_nothing``: a 300 ms grant, once past its time, no
  longer covers the call it was made for.
- ``test_a_secret_argument_is_pinned_without_being_kept``: a grant pinning a secret
  ``pin`` covers the same pin only; the pin shows nowhere in the listing or the audit;
  an exact grant with a secret is not matched by sending the redaction marker
  ``"[redacted]"`` as the pin (what the store keeps in its place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from engine.client import ServerError, open_client
from engine.protocol import AgentAction, Remember, RememberScope
from tests.engine.conftest import RunningServer
from tests.grants.conftest import ask, covered, grants_config, refusal, result_of

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
HOUR = Remember(scope=RememberScope.DURATION, duration="1h")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return grants_config(tmp_path / "config")


async def _remember(client: Any, name: str, arguments: dict[str, Any], remember: Remember,
                    session_id: str | None = None) -> None:
    action = await ask(client, name, arguments, session_id)
    await client.answer(action.action_id, True, remember=remember)
    assert str((await result_of(client, action)).status) == "ok"


async def test_a_grant_never_covers_other_arguments(server: RunningServer) -> None:
    with trio.fail_after(40):
        async with open_client(server.url, server.token()) as alice:
            await _remember(alice, "note", {"path": "a.txt"}, HOUR)
            assert await covered(alice, "note", {"path": "a.txt"})
            for arguments in ({"path": "a.txt", "size": 1}, {"path": "a.txt "}, {"path": "./a.txt"},
                              {"path": "a.txt/../a.txt"}, {"path": "A.txt"}, {}):
                assert not await covered(alice, "note", arguments), arguments
            assert not await covered(alice, "secretive", {"path": "a.txt"})


async def test_a_match_never_covers_more_than_confirmed(server: RunningServer) -> None:
    with trio.fail_after(60):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("root", ("admin",))) as admin:
            action = await ask(alice, "cmd", {"command": "ls docs"})
            seen = await admin.next_event_of(AgentAction)
            await admin.answer(seen.action_id, True, remember=Remember(
                scope=RememberScope.DURATION, duration="10m", match={"command": "program"}))
            await result_of(alice, action)
            assert await covered(alice, "cmd", {"command": "ls -la notes"})
            tricks = ["ls; rm -rf x", "ls && id", "ls || id", "ls | sh", "ls $(id)", "ls `id`", "ls\nid",
                      "ls\tx;id", "ls > /etc/x", "ls < x", "ls *", "ls ?", "ls 'a;b'", 'ls "a"', "ls ~", "ls &",
                      "lsof", "ls2", "./ls", "/bin/ls", " ls;id", "LS", "ls#x", "ls {a,b}", "ls !x"]
            for command in tricks:
                action = await ask(alice, "cmd", {"command": command})
                assert action.requires_approval and action.grant is None, command
                asked = await admin.next_event_of(AgentAction)
                assert asked.action_id == action.action_id
                await admin.answer(asked.action_id, False)
                assert str((await result_of(alice, action)).status) == "denied"


async def test_a_grant_never_covers_another_subject(server: RunningServer) -> None:
    with trio.fail_after(40):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            alices = (await alice.start_session("assistant")).session_id
            await _remember(alice, "note", {"path": "a.txt"}, HOUR, alices)
            await _remember(alice, "note", {"path": "s.txt"}, Remember(scope=RememberScope.SESSION), alices)
            assert not await covered(bob, "note", {"path": "a.txt"})
            bobs = (await bob.start_session("assistant")).session_id
            assert not await covered(bob, "note", {"path": "a.txt"}, bobs)
            assert not await covered(bob, "note", {"path": "s.txt"}, bobs)
            # Bob answers alice's pending action, asking to remember it: refused, nothing made.
            pending = await ask(alice, "note", {"path": "b.txt"}, alices)
            answer = await bob.answer(pending.action_id, True, remember=HOUR)
            assert (await refusal(bob, answer)).code == "forbidden"
            with pytest.raises(ServerError) as listed:
                await bob.list_grants(alices)
            assert listed.value.code == "forbidden"
            assert (await bob.list_grants(all=True)).grants == ()
            await alice.answer(pending.action_id, False)
            assert str((await result_of(alice, pending)).status) == "denied"
            assert len((await alice.list_grants()).grants) == 2


async def test_a_session_grant_never_covers_another_session(server: RunningServer) -> None:
    with trio.fail_after(40):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            first = (await alice.start_session("assistant")).session_id
            await _remember(alice, "note", {"path": "a.txt"}, Remember(scope=RememberScope.SESSION), first)
            assert await covered(alice, "note", {"path": "a.txt"}, first)
            second = (await alice.start_session("assistant")).session_id
            assert not await covered(alice, "note", {"path": "a.txt"}, second)
            assert not await covered(alice, "note", {"path": "a.txt"})
            # Bob names alice's session in his call: refused before anything is decided.
            with pytest.raises(ServerError) as refused:
                await bob.call_tool("note", {"path": "a.txt"}, session_id=first)
            assert refused.value.code == "forbidden"


async def test_an_expired_grant_covers_nothing(server: RunningServer) -> None:
    with trio.fail_after(40):
        async with open_client(server.url, server.token()) as alice:
            await _remember(alice, "note", {"path": "a.txt"}, Remember(scope=RememberScope.DURATION,
                                                                       duration="300ms"))
            for _ in range(200):  # until the grant's own end, polled a bounded number of times
                if not (await alice.list_grants()).grants:
                    break
                await trio.sleep(0.05)
            assert not await covered(alice, "note", {"path": "a.txt"})


async def test_a_secret_argument_is_pinned_without_being_kept(server: RunningServer) -> None:
    with trio.fail_after(40):
        async with open_client(server.url, server.token()) as alice:
            secret = "4711-secret"
            await _remember(alice, "pin", {"account": "1", "pin": secret}, Remember(
                scope=RememberScope.DURATION, duration="1h", match={"pin": "same"}))
            assert await covered(alice, "pin", {"account": "2", "pin": secret})
            assert not await covered(alice, "pin", {"account": "1", "pin": "4712-secret"})
            assert not await covered(alice, "pin", {"account": "1"})
            listing = await alice.list_grants()
            assert secret not in repr(listing)
            assert listing.grants[0].arguments == {"account": "1", "pin": "[redacted]"}
            assert not await covered(alice, "pin", {"account": "1", "pin": "[redacted]"})
            await _remember(alice, "pin", {"account": "9", "pin": secret}, HOUR)
            assert await covered(alice, "pin", {"account": "9", "pin": secret})
            assert not await covered(alice, "pin", {"account": "9", "pin": "[redacted]"})
    records = [r.to_dict() for r in query(server.settings.state_dir, kind="grant")]
    assert records and secret not in repr(records)
