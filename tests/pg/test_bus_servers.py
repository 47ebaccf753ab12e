"""Two real ``sconnect serve`` processes on one PostgreSQL database act as one service
(engine/server/pgbus.py), with WebSocket clients on each:

- test_an_approval_waiting_on_a_is_decided_once_from_either_instance: alice's turn on A
  asks for an admin approval; the admin connected to B is shown it (pushed across), as
  is the admin on A; both answer at once, opposite answers: exactly one wins (the
  database's conditional UPDATE), the other gets ``already_decided``, alice's turn on A
  goes on with the winner's answer, and the store and the audit log name the winner.
- test_an_answer_on_b_resumes_the_turn_on_a: only an admin on B; approving there makes
  the tool run on A; an admin who connects to B later still gets the waiting action.
- test_cancel_and_stop_sent_on_b_reach_the_turn_on_a: alice's second client, on B,
  cancels the turn running on A (its approval is cancelled, the session stays active),
  then stops the session (terminated on A); another subject's cancel is forbidden; the
  terminated session is not_found at once (no instance is asked), and an active session
  that no instance runs (written to the store only) is not_found once no instance
  answered B's question (meanwhile, on its own connection).
- test_the_session_limit_holds_across_instances: with sessions_per_subject=2, two live
  sessions on A make B refuse a third (``rate_limited``) once its heartbeat has seen them.
- test_an_answer_for_a_dead_instances_action_is_refused: A is SIGKILLed while its turn
  waits; once B sees A's heartbeat stale, an admin's answer on B is refused and the
  action is cancelled in the store.

The last two beat fast (``limits.instance_heartbeat``): they wait for heartbeats, and what
they prove holds whatever the pace. The others keep the default, so that no instance is
taken for dead while a loaded machine delays its beats.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import psycopg
import pytest
import trio

from engine.client import ServerError, open_client
from engine.protocol import AgentAction, AgentResponse, AgentResult, AgentState, ErrorFrame
from engine.store import Store
from tests.security.cliserver import SECRET, place, serving

pytestmark = pytest.mark.slow

FAST_BEAT_S = 0.25
FAST_BEAT = ("--limit", f"instance_heartbeat={int(FAST_BEAT_S * 1000)}ms")


def _token(sub: str, *roles: str) -> str:
    return jwt.encode({"sub": sub, "roles": list(roles) or ["user"], "exp": int(time.time()) + 600}, SECRET,
                      algorithm="HS256")


def _patient(*places: Any) -> None:
    """Approvals wait a minute (the shared test config says 3 s): instances on a loaded
    machine, and a dead instance's heartbeat going stale, take longer than that."""
    for where in places:
        agent = where.config / "agents.d" / "assistant.yaml"
        agent.write_text(agent.read_text().replace("approval_timeout: 3s", "approval_timeout: 60s"))


async def _action_for(client: object, action_id: str) -> AgentAction:
    while True:
        action = await client.next_event_of(AgentAction)  # type: ignore[attr-defined]
        if action.action_id == action_id:
            return action  # type: ignore[no-any-return]


async def test_an_approval_waiting_on_a_is_decided_once_from_either_instance(pg_url: str,
                                                                             shared_env: dict[str, str]) -> None:
    with place() as a_place, place() as b_place:
        _patient(a_place, b_place)
        async with serving(a_place, env=shared_env) as a, serving(b_place, env=shared_env) as b:
            with trio.fail_after(60):
                async with open_client(a.url, _token("alice")) as alice, \
                        open_client(a.url, _token("root", "admin")) as root, \
                        open_client(b.url, _token("boss", "admin")) as boss:
                    sid = (await alice.start_session("assistant")).session_id
                    await alice.send_message(sid, 'write "hello" to hello.txt')
                    asked = await alice.next_event_of(AgentAction, session_id=sid)
                    assert asked.requires_approval and str(asked.approver) == "admin"
                    shown_on_b = await _action_for(boss, asked.action_id)
                    await _action_for(root, asked.action_id)
                    assert (shown_on_b.name, shown_on_b.arguments["path"]) == ("write_file", "hello.txt")
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(boss.answer, asked.action_id, True)
                        nursery.start_soon(root.answer, asked.action_id, False)
                    result = await alice.next_event_of(AgentResult, session_id=sid)
                    winner, loser = (boss, root) if str(result.status) == "ok" else (root, boss)
                    assert str(result.status) in ("ok", "denied"), result
                    assert (await loser.next_event_of(ErrorFrame)).code == "already_decided"
                    await alice.next_event_of(AgentResponse, session_id=sid)
    expected = ("approved", "boss") if winner is boss else ("denied", "root")
    with psycopg.connect(shared_env["SCONNECT_DATABASE_URL"]) as conn:
        decided = conn.execute("SELECT status, decided_by FROM pending_actions WHERE action_id = %s",
                               (asked.action_id,)).fetchone()
        approvals = conn.execute(
            "SELECT outcome, approver FROM audit_records WHERE kind = 'approval' AND target = 'write_file'").fetchall()
    assert decided == expected
    assert approvals == [expected]


async def test_an_answer_on_b_resumes_the_turn_on_a(pg_url: str, shared_env: dict[str, str]) -> None:
    with place() as a_place, place() as b_place:
        _patient(a_place, b_place)
        async with serving(a_place, env=shared_env) as a, serving(b_place, env=shared_env) as b:
            with trio.fail_after(60):
                async with open_client(a.url, _token("alice")) as alice, \
                        open_client(b.url, _token("boss", "admin")) as boss:
                    sid = (await alice.start_session("assistant")).session_id
                    await alice.send_message(sid, 'write "from b" to fromb.txt')
                    asked = await alice.next_event_of(AgentAction, session_id=sid)
                    await _action_for(boss, asked.action_id)
                    # An approver who connects to B later is shown it as well, and can list it.
                    async with open_client(b.url, _token("late", "admin")) as late:
                        await _action_for(late, asked.action_id)
                        assert [x.action_id for x in (await late.list_actions()).actions] == [asked.action_id]
                    await boss.answer(asked.action_id, True)
                    result = await alice.next_event_of(AgentResult, session_id=sid)
                    assert str(result.status) == "ok", result
                    assert (await boss.list_actions()).actions == ()
        # The tool ran on A, where the turn is (alice's workspace there), not on B.
        assert [p.read_text() for p in (a_place.state / "workspace").glob("alice-*/fromb.txt")] == ["from b"]
        assert not list((b_place.state / "workspace").glob("*/fromb.txt"))


async def test_cancel_and_stop_sent_on_b_reach_the_turn_on_a(pg_url: str, shared_env: dict[str, str]) -> None:
    with place() as a_place, place() as b_place:
        _patient(a_place, b_place)
        async with serving(a_place, env=shared_env) as a, serving(b_place, env=shared_env) as b:
            with trio.fail_after(60):
                async with open_client(a.url, _token("alice")) as alice, \
                        open_client(b.url, _token("alice")) as elsewhere, \
                        open_client(b.url, _token("mallory")) as mallory, \
                        open_client(b.url, _token("alice")) as idle, \
                        await Store.connect(shared_env["SCONNECT_DATABASE_URL"]) as store, \
                        trio.open_nursery() as nursery:
                    await store.create_session("run-nowhere", "alice", "assistant")
                    unrun: list[ServerError] = []

                    async def nobody_runs_it() -> None:
                        # B asks the other instances and waits for one to answer (3 s): side
                        # by side with the rest, which does not touch this session.
                        with pytest.raises(ServerError) as caught:
                            await idle.cancel_turn("run-nowhere")
                        unrun.append(caught.value)

                    nursery.start_soon(nobody_runs_it)
                    sid = (await alice.start_session("assistant")).session_id
                    await alice.send_message(sid, 'write "never" to never.txt')
                    asked = await alice.next_event_of(AgentAction, session_id=sid)
                    with pytest.raises(ServerError) as foreign:
                        await mallory.cancel_turn(sid)
                    assert foreign.value.code == "forbidden"
                    state = await elsewhere.cancel_turn(sid)
                    assert (state.session_id, str(state.state)) == (sid, "active")
                    result = await alice.next_event_of(AgentResult, session_id=sid)
                    assert (result.action_id, str(result.status)) == (asked.action_id, "cancelled")
                    assert (await alice.next_event_of(AgentResponse, session_id=sid)).cancelled is True
                    stopped = await elsewhere.control(sid, "stop")
                    assert str(stopped.state) == "terminated"
                    while str((await alice.next_event_of(AgentState, session_id=sid)).state) != "terminated":
                        pass
                    with trio.fail_after(2):  # terminated: answered without asking (or waiting for) anyone
                        with pytest.raises(ServerError) as gone:
                            await elsewhere.cancel_turn(sid)
                    assert gone.value.code == "not_found"
                assert [error.code for error in unrun] == ["not_found"], unrun
    with psycopg.connect(shared_env["SCONNECT_DATABASE_URL"]) as conn:
        status = conn.execute("SELECT status FROM pending_actions WHERE action_id = %s", (asked.action_id,)).fetchone()
        state_row = conn.execute("SELECT state FROM sessions WHERE session_id = %s", (sid,)).fetchone()
    assert (status, state_row) == (("cancelled",), ("terminated",))


async def test_the_session_limit_holds_across_instances(pg_url: str, shared_env: dict[str, str]) -> None:
    limit = ("--limit", "sessions_per_subject=2", *FAST_BEAT)
    with place() as a_place, place() as b_place:
        _patient(a_place, b_place)
        async with serving(a_place, *limit, env=shared_env) as a, serving(b_place, *limit, env=shared_env) as b:
            with trio.fail_after(60):
                async with open_client(a.url, _token("alice")) as on_a, open_client(b.url, _token("alice")) as on_b:
                    for _ in range(2):
                        await on_a.start_session("assistant")
                    refused = None
                    for _ in range(100):  # bounded: B learns of A's sessions at its next heartbeat
                        try:
                            extra = (await on_b.start_session("assistant")).session_id
                        except ServerError as exc:
                            refused = exc
                            break
                        await on_b.control(extra, "stop")  # not seen yet: take it back and try again
                        await trio.sleep(FAST_BEAT_S)
                    assert refused is not None and refused.code == "rate_limited"
                    assert "sessions_per_subject" in refused.message


async def test_an_answer_for_a_dead_instances_action_is_refused(pg_url: str, shared_env: dict[str, str]) -> None:
    """A is SIGKILLed while its turn waits for an admin connected to B: once B's heartbeat
    finds A gone, the admin's answer is refused and the action is cancelled in the store,
    rather than 'approved' with nobody left to run it."""
    import contextlib

    url = shared_env["SCONNECT_DATABASE_URL"]
    with place() as a_place, place() as b_place:
        _patient(a_place, b_place)
        async with serving(b_place, *FAST_BEAT, env=shared_env) as b:
            with trio.fail_after(90):
                async with open_client(b.url, _token("boss", "admin")) as boss:
                    a_cm = serving(a_place, *FAST_BEAT, env=shared_env)
                    a = await a_cm.__aenter__()
                    try:
                        async with open_client(a.url, _token("alice")) as alice:
                            sid = (await alice.start_session("assistant")).session_id
                            await alice.send_message(sid, 'write "orphan" to orphan.txt')
                            asked = await alice.next_event_of(AgentAction, session_id=sid)
                            await _action_for(boss, asked.action_id)
                            a.process.kill()
                            await trio.to_thread.run_sync(a.process.wait)
                    finally:
                        with contextlib.suppress(AssertionError):  # its exit status is SIGKILL's, by design
                            await a_cm.__aexit__(None, None, None)
                    a_id = (a_place.state / "instance-id").read_text().strip()
                    b_id = (b_place.state / "instance-id").read_text().strip()
                    # Until B has finished a beat begun after A's last row went stale: B's row of
                    # such a beat is seen, then a later one (beats run one after the other, so
                    # the first one's view of who is alive is in force by then).
                    after_stale = None
                    for _ in range(600):  # bounded, and by fail_after above
                        with psycopg.connect(url) as conn:
                            seen = {i: (at, stale) for i, at, stale in conn.execute(
                                "SELECT instance, seen_at, stale_after FROM presence WHERE subject = '' "
                                "AND instance IN (%s, %s)", (a_id, b_id)).fetchall()}
                        if a_id in seen and b_id in seen:
                            a_last, b_beat = seen[a_id][0] + seen[a_id][1], seen[b_id][0]
                            if after_stale is None and b_beat > a_last:
                                after_stale = b_beat
                            elif after_stale is not None and b_beat > after_stale:
                                break
                        await trio.sleep(0.05)
                    else:
                        raise AssertionError(f"B never saw A go stale: {seen}")
                    assert seen[a_id][1] == 3 * FAST_BEAT_S  # A's row said how soon it goes stale
                    await boss.answer(asked.action_id, True)
                    refused = await boss.next_event_of(ErrorFrame)
                    assert refused.code == "already_decided" and "stopped" in refused.message, refused
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM pending_actions WHERE action_id = %s", (asked.action_id,)).fetchone()
    assert row == ("cancelled",)
