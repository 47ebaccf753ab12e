"""Remembered approvals end to end: a real server, real WebSocket clients.

Each test approves with ``remember`` and then checks which later calls run without
asking (their ``agent_action`` names the grant, the audit record names the grant and its
maker) and which still ask; then listing, revoking and the refusals of bad input.
"""

from __future__ import annotations

import pytest
import trio

from engine.audit import query
from engine.client import ServerError, open_client
from engine.protocol import AgentAction, Remember, RememberScope
from tests.engine.conftest import RunningServer
from tests.grants.conftest import ask, covered, refusal, result_of

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
SESSION = Remember(scope=RememberScope.SESSION)


async def test_a_session_grant_covers_the_same_call_in_the_same_session(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            sid = (await alice.start_session("assistant")).session_id
            first = await ask(alice, "note", {"path": "a.txt"}, sid)
            assert first.requires_approval and first.grant is None
            await alice.answer(first.action_id, True, remember=SESSION)
            assert str((await result_of(alice, first)).status) == "ok"
            [grant] = (await alice.list_grants()).grants
            assert (grant.subject, grant.made_by, grant.scope, grant.session_id, grant.name, grant.match) == (
                "alice", "alice", "session", sid, "note", None)
            # 8h: the default bound for a user's approval.
            assert 8 * 3600 - 60 < grant.expires_in_s <= 8 * 3600
            again = await ask(alice, "note", {"path": "a.txt"}, sid)
            assert not again.requires_approval and again.grant is not None
            ref = again.grant
            assert (ref.grant_id, ref.made_by, ref.scope) == (grant.grant_id, "alice", "session")
            assert grant.grant_id in again.reason
            assert str((await result_of(alice, again)).status) == "ok"
            # Other arguments, another session, a direct call: asked again.
            assert not await covered(alice, "note", {"path": "b.txt"}, sid)
            assert not await covered(alice, "note", {"path": "a.txt", "size": 1}, sid)
            other = (await alice.start_session("assistant")).session_id
            assert not await covered(alice, "note", {"path": "a.txt"}, other)
            assert not await covered(alice, "note", {"path": "a.txt"})
    approvals = [r.to_dict() for r in query(server.settings.state_dir, kind="approval")]
    by_grant = [r for r in approvals if r["details"].get("grant_id") == grant.grant_id]
    assert len(by_grant) == 1
    assert (by_grant[0]["approver"], by_grant[0]["decided_by"], by_grant[0]["details"]["grant_made_by"]) == (
        "alice", "person", "alice")
    [made] = [r.to_dict() for r in query(server.settings.state_dir, kind="grant")]
    assert (made["action"], made["outcome"], made["approver"], made["details"]["grant_id"]) == (
        "grant.make", "made", "alice", grant.grant_id)


async def test_a_duration_grant_with_a_match_covers_what_the_approver_confirmed(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, "note", {"path": "a.txt", "size": 10})
            remember = Remember(scope=RememberScope.DURATION, duration="30m", match={"path": "same"})
            await alice.answer(action.action_id, True, remember=remember)
            assert str((await result_of(alice, action)).status) == "ok"
            [grant] = (await alice.list_grants()).grants
            assert (grant.scope, grant.session_id, grant.match) == ("duration", None, {"path": "same"})
            assert 30 * 60 - 60 < grant.expires_in_s <= 30 * 60
            # The same path with another size, in a session or not: covered.
            assert await covered(alice, "note", {"path": "a.txt", "size": 99})
            sid = (await alice.start_session("assistant")).session_id
            assert await covered(alice, "note", {"path": "a.txt"}, sid)
            # Another path, or no path at all: asked again.
            assert not await covered(alice, "note", {"path": "A.txt", "size": 10})
            assert not await covered(alice, "note", {"size": 10})


async def test_an_admin_remembers_a_command_by_its_program(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("root", ("admin",))) as admin:
            action = await ask(alice, "cmd", {"command": "ls -l docs"})
            assert str(action.approver) == "admin"
            seen = await admin.next_event_of(AgentAction)
            remember = Remember(scope=RememberScope.DURATION, duration="20m", match={"command": "program"})
            await admin.answer(seen.action_id, True, remember=remember)
            assert str((await result_of(alice, action)).status) == "ok"
            [grant] = (await alice.list_grants()).grants
            assert (grant.subject, grant.made_by, grant.approver, grant.match) == (
                "alice", "root", "admin", {"command": "program"})
            assert await covered(alice, "cmd", {"command": "ls -a /tmp"})
            # Not a plain command line, another program, a path to "ls": the admin is asked again.
            for command in ("ls; id", "ls $(id)", "ls | sh", "lsblk", "/bin/ls", "ls\nid", "ls `id`", "ls > x"):
                action = await ask(alice, "cmd", {"command": command})
                assert action.requires_approval and action.grant is None, command
                asked = await admin.next_event_of(AgentAction)
                assert asked.action_id == action.action_id
                await admin.answer(asked.action_id, False)
                assert str((await result_of(alice, action)).status) == "denied"
            # The admin sees it in the listing too (an admin sees everyone's).
            assert [g.grant_id for g in (await admin.list_grants()).grants] == [grant.grant_id]


async def test_revoked_grants_cover_nothing_and_only_their_people_revoke(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("bob")) as bob, \
                open_client(server.url, server.token("root", ("admin",))) as admin:
            action = await ask(alice, "note", {"path": "a.txt"})
            await alice.answer(action.action_id, True, remember=Remember(scope=RememberScope.DURATION, duration="1h"))
            await result_of(alice, action)
            [grant] = (await alice.list_grants()).grants
            assert (await bob.list_grants()).grants == ()
            with pytest.raises(ServerError) as refused:
                await bob.revoke_grant(grant.grant_id)
            assert refused.value.code == "forbidden"
            with pytest.raises(ServerError) as missing:
                await alice.revoke_grant("no-such-grant")
            assert missing.value.code == "not_found"
            assert await covered(alice, "note", {"path": "a.txt"})
            revoked = await alice.revoke_grant(grant.grant_id, "done with it")
            assert (revoked.grant.status, revoked.grant.ended_by, revoked.grant.end_reason) == (
                "revoked", "alice", "done with it")
            assert not await covered(alice, "note", {"path": "a.txt"})
            assert (await alice.list_grants()).grants == ()
            assert [g.status for g in (await alice.list_grants(all=True)).grants] == ["revoked"]
            with pytest.raises(ServerError) as twice:
                await alice.revoke_grant(grant.grant_id)
            assert twice.value.code == "invalid_state"
            # An admin may revoke anyone's.
            action = await ask(alice, "note", {"path": "b.txt"})
            await alice.answer(action.action_id, True, remember=Remember(scope=RememberScope.DURATION, duration="1h"))
            await result_of(alice, action)
            [second] = (await alice.list_grants()).grants
            assert (await admin.revoke_grant(second.grant_id)).grant.ended_by == "root"
    revocations = [r.to_dict() for r in query(server.settings.state_dir, kind="grant")
                   if r.action == "grant.revoke"]
    assert [(r["approver"], r["details"]["grant_id"]) for r in revocations] == [
        ("alice", grant.grant_id), ("root", second.grant_id)]


@pytest.mark.parametrize(("tool", "remember", "code", "words"), [
    ("note", Remember(scope=RememberScope.DURATION, duration="9h"), "forbidden", "longer than"),
    ("note", Remember(scope=RememberScope.DURATION, duration="an hour"), "invalid_message", "not a duration"),
    ("note", Remember(scope=RememberScope.DURATION, duration="0s"), "invalid_message", "longer than 0s"),
    ("note", Remember(scope=RememberScope.DURATION), "invalid_message", "needs a duration"),
    ("note", Remember(scope=RememberScope.SESSION), "invalid_message", "direct call"),
    ("note", Remember(scope=RememberScope.SESSION, duration="1h"), "invalid_message", "takes no duration"),
    ("note", Remember(scope=RememberScope.ACTION, duration="1h"), "invalid_message", "takes no duration"),
    ("note", Remember(scope=RememberScope.DURATION, duration="1h", match={}), "invalid_message", "names no argument"),
    ("note", Remember(scope=RememberScope.DURATION, duration="1h", match={"colour": "same"}), "invalid_message",
     "no argument 'colour'"),
    ("note", Remember(scope=RememberScope.DURATION, duration="1h", match={"path": "prefix"}), "invalid_message",
     "is not one of same, program"),
    ("note", Remember(scope=RememberScope.DURATION, duration="1h", match={"path": 1}), "invalid_message",
     "must be"),
    ("note", Remember(scope=RememberScope.DURATION, duration="1h", match={"path": "program"}), "invalid_message",
     "not a plain command line"),
    ("pin", Remember(scope=RememberScope.DURATION, duration="1h", match={"pin": "program"}), "invalid_message",
     "secret argument"),
    ("secretive", Remember(scope=RememberScope.DURATION, duration="1h"), "forbidden", "remember: never"),
    ("vault", Remember(scope=RememberScope.DURATION, duration="1h"), "forbidden", "level 3 is never remembered"),
    ("vault2", Remember(scope=RememberScope.DURATION, duration="3h"), "forbidden", "up to 2h (rule alice-vault2"),
])
async def test_a_remember_the_policy_or_the_action_does_not_allow_is_refused(
    server: RunningServer, tool: str, remember: Remember, code: str, words: str
) -> None:
    arguments = {"account": "1", "pin": "1234"} if tool == "pin" else {"path": "a.txt;x"}
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, tool, arguments)
            assert action.requires_approval
            answer = await alice.answer(action.action_id, True, remember=remember)
            error = await refusal(alice, answer)
            assert (error.code, words in error.message) == (code, True), error.message
            assert error.details["path"].startswith("$.payload.remember")
            # Nothing was remembered, and the action still waits: a plain approval runs it.
            assert (await alice.list_grants(all=True)).grants == ()
            await alice.answer(action.action_id, True)
            assert str((await result_of(alice, action)).status) == "ok"


async def test_remember_on_a_denial_is_refused(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, "note", {"path": "a.txt"})
            answer = await alice.answer(action.action_id, False, remember=SESSION)
            assert (await refusal(alice, answer)).code == "invalid_message"
            await alice.answer(action.action_id, False)
            assert str((await result_of(alice, action)).status) == "denied"
            assert (await alice.list_grants(all=True)).grants == ()


async def test_a_rule_that_allows_longer_lets_level_3_be_remembered(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            action = await ask(alice, "vault2", {"path": "a.txt"})
            await alice.answer(action.action_id, True, remember=Remember(scope=RememberScope.DURATION, duration="2h"))
            await result_of(alice, action)
            assert await covered(alice, "vault2", {"path": "a.txt"})


async def test_listing_another_subjects_session_is_forbidden(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            bobs = (await bob.start_session("assistant")).session_id
            with pytest.raises(ServerError) as refused:
                await alice.list_grants(bobs)
            assert refused.value.code == "forbidden"
            with pytest.raises(ServerError) as missing:
                await alice.list_grants("no-such-session")
            assert missing.value.code == "not_found"
            assert (await bob.list_grants(bobs)).grants == ()


async def test_past_the_most_live_grants_per_tool_the_oldest_ends(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.server.grants

    monkeypatch.setattr(engine.server.grants, "MAX_LIVE_PER_TARGET", 2)
    hour = Remember(scope=RememberScope.DURATION, duration="1h")
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as alice:
            for path in ("1.txt", "2.txt", "3.txt"):
                action = await ask(alice, "note", {"path": path})
                await alice.answer(action.action_id, True, remember=hour)
                await result_of(alice, action)
            listed = (await alice.list_grants(all=True)).grants
            assert [(g.arguments["path"], g.status) for g in listed] == [
                ("3.txt", "live"), ("2.txt", "live"), ("1.txt", "ended")]
            assert listed[2].end_reason == "replaced by a newer grant: at most 2 live grants per subject and tool"
            assert not await covered(alice, "note", {"path": "1.txt"})
            assert await covered(alice, "note", {"path": "2.txt"})
