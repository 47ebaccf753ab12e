"""The protocol end to end: a real server, real WebSocket clients, real sandboxed tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import sandbox
from engine.audit import default_key_path
from engine.audit._keys import derive
from engine.canonical import keyed_digest
from engine.client import ClientClosed, ServerError, TokenRefused, open_client
from engine.protocol import AgentAction, AgentResponse, AgentResult, ErrorFrame, OfferedTool
from engine.toolrun import subject_workspace
from tests.engine.conftest import SLEEPER, RunningServer
from tests.engine.processes import unique_marker, until_gone, until_running

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_level_0_runs_without_asking_and_streams(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            state = await client.start_session("assistant")
            assert str(state.state) == "active"
            turn = await client.converse(state.session_id, "what is 17*23")
            assert turn.response.content == "17*23 = 391"
            assert turn.text == turn.response.content
            assert len(turn.tokens) > 1
            [action] = turn.actions
            assert (action.name, action.level, action.requires_approval, str(action.approver)) == (
                "calculator", 0, False, "none"
            )
            assert action.arguments == {"expression": "17*23"}
            [result] = turn.results
            assert str(result.status) == "ok" and result.output["result"] == 391


async def test_every_shipped_level_0_tool_answers(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            time_turn = await client.converse(sid, "what time is it?")
            assert time_turn.response.content.startswith("It is 20")
            words = await client.converse(sid, "count the words in the quick brown fox jumps")
            assert "has 5 words" in words.response.content
            other = await client.converse(sid, "sing me a song")
            assert other.response.content.startswith("I can tell the time")
            assert other.actions == ()


async def _write_notes(server: RunningServer, text: str) -> None:
    workspace = subject_workspace(server.settings.workspace, "alice")
    (workspace / "notes.txt").write_text(text)
    if os.geteuid() == 0:
        os.chown(workspace / "notes.txt", sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


async def test_level_1_approved(server: RunningServer) -> None:
    await _write_notes(server, "buy milk\n")
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "read notes.txt", approve=lambda action: True)
            [action] = turn.actions
            assert (action.name, action.requires_approval, str(action.approver)) == ("read_file", True, "user")
            assert "buy milk" in turn.response.content
            assert str(turn.results[0].status) == "ok"


async def test_level_1_denied(server: RunningServer) -> None:
    await _write_notes(server, "secret plans\n")
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "read notes.txt", approve=lambda action: False)
            assert str(turn.results[0].status) == "denied"
            assert "secret plans" not in turn.response.content
            assert "could not use the tool" in turn.response.content


async def test_level_1_times_out(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.engine.conftest import copy_example_config

    server = await start_server(copy_example_config(tmp_path / "cfg", approval_timeout="500ms"))
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "read notes.txt")
            event = await client.next_event_of(AgentResult)
            assert str(event.status) == "timeout"
            # Answering after the timeout is refused with its own code, and nothing runs.
            await client.answer(event.action_id, True)
            error = await client.next_event_of(ErrorFrame)
            assert error.code == "expired"
    assert (await stored_action(server, event.action_id)).status == "expired"



async def test_level_2_needs_an_admin_and_the_user_cannot_approve(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("root", ("admin",))) as admin:
            async with open_client(server.url, server.token("alice", ("user",))) as user:
                sid = (await user.start_session("assistant")).session_id
                await user.send_message(sid, 'write "hello" to greeting.txt')
                action = await user.next_event_of(AgentAction)
                assert (action.requires_approval, str(action.approver)) == (True, "admin")
                # The requesting user may not approve a level-2 action.
                await user.answer(action.action_id, True)
                assert (await user.next_event_of(ErrorFrame)).code == "forbidden"
                # The admin sees the same action and approves it.
                seen = await admin.next_event_of(AgentAction)
                assert seen.action_id == action.action_id
                await admin.answer(action.action_id, True)
                result = await user.next_event_of(AgentResult)
                assert str(result.status) == "ok" and result.output["bytes_written"] == 5
                # A second approval of the same action is refused; nothing runs twice.
                await admin.answer(action.action_id, True)
                assert (await admin.next_event_of(ErrorFrame)).code == "already_decided"
    assert (subject_workspace(server.settings.workspace, "alice") / "greeting.txt").read_text() == "hello"
    record = await stored_action(server, action.action_id)
    decided = (record.status, record.decided_by, record.approver, record.name)
    assert decided == ("approved", "root", "admin", "write_file")
    # Keyed with a key derived from the audit key (kept beside the state directory).
    key = derive(default_key_path(server.settings.state_dir).read_bytes(), "arguments")
    assert record.arguments_digest == keyed_digest(key, {"path": "greeting.txt", "content": "hello"})


async def test_level_2_waits_for_an_admin_who_connects_later(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice", ("user",))) as user:
            sid = (await user.start_session("assistant")).session_id
            await user.send_message(sid, 'write "later" to later.txt')
            await trio.sleep(0.3)
            async with open_client(server.url, server.token("root", ("admin",))) as admin:
                seen = await admin.next_event_of(AgentAction)
                assert seen.name == "write_file"
                await admin.answer(seen.action_id, True)
                result = await user.next_event_of(AgentResult)
                assert str(result.status) == "ok"


async def test_level_3_is_refused(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token("root", ("admin", "user"))) as client:
            sid = (await client.start_session("bookkeeper")).session_id
            turn = await client.converse(sid, "pay 20 EUR to alice for lunch", approve=lambda a: True)
            [action] = turn.actions
            assert action.name == "send_payment" and action.level == 3
            assert action.arguments == {"amount": 20, "currency": "EUR", "recipient": "alice", "memo": "lunch"}
            assert str(turn.results[0].status) == "denied"
    assert not (subject_workspace(server.settings.workspace, "root") / "payments.jsonl").exists()




async def test_stop_during_a_running_tool_leaves_no_process(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    marker = unique_marker("3141")
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text().replace("tools: [clock,", "tools: [sleeper, clock,")
    text = text.replace("  rules:\n", "  rules:\n    - match: 'nap'\n      tool: sleeper\n      answer: rested\n", 1)
    assistant.write_text(text)
    server = await start_server(config_dir)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "take a nap")
            await until_running(marker)
            state = await client.control(sid, "stop")
            assert str(state.state) == "terminated"
            await until_gone(marker)
            # The killed execution was reported (before 'terminated') and audited.
            results = []
            with trio.move_on_after(0.5):
                while True:
                    event = await client.next_event()
                    if isinstance(event, AgentResult):
                        results.append(event)
            assert [str(r.status) for r in results] == ["cancelled"]
            # A terminated session takes no more messages.
            with pytest.raises(ServerError) as caught:
                await client.resume_session(sid, "assistant")
            assert caught.value.code == "invalid_state"
    from engine.audit import query

    executions = query(server.settings.state_dir, kind="execution", tool="sleeper")
    assert [r.outcome for r in executions] == ["cancelled"]


async def test_closing_the_connection_kills_its_tools(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    marker = unique_marker("2718")
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    server = await start_server(config_dir)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            from engine.protocol import ToolCall

            await client.send(ToolCall(id="t1", name="sleeper", arguments={}))
            await until_running(marker)
        await until_gone(marker)


async def test_pause_and_resume(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            assert str((await client.control(sid, "pause")).state) == "paused"
            with pytest.raises(ServerError) as caught:
                await client.converse(sid, "what is 1+1")
            assert caught.value.code == "invalid_state"
            with pytest.raises(ServerError) as twice:
                await client.control(sid, "pause")
            assert twice.value.code == "invalid_state"
            assert str((await client.control(sid, "resume")).state) == "active"
            assert (await client.converse(sid, "what is 1+1")).response.content == "1+1 = 2"


async def test_resume_after_reconnect(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice")) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.converse(sid, "what is 6*7")
        async with open_client(server.url, server.token("alice")) as client:
            state = await client.resume_session(sid, "assistant")
            assert (state.session_id, str(state.state), state.agent) == (sid, "active", "assistant")
            assert (await client.converse(sid, "what is 2*3")).response.content == "2*3 = 6"
        history = await server_history(server, sid)
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"] * 2
        async with open_client(server.url, server.token("mallory")) as intruder:
            with pytest.raises(ServerError) as caught:
                await intruder.resume_session(sid, "assistant")
            assert caught.value.code == "forbidden"
            with pytest.raises(ServerError) as missing:
                await intruder.resume_session("no-such-session", "assistant")
            assert missing.value.code == "not_found"


async def stored_action(server: RunningServer, action_id: str):  # type: ignore[no-untyped-def]
    from engine.store import Store

    async with await Store.open(server.settings.database) as store:
        return await store.get_action(action_id)


async def server_history(server: RunningServer, session_id: str) -> list[dict]:  # type: ignore[type-arg]
    from engine.store import Store

    async with await Store.open(server.settings.database) as store:
        return [dict(m) for m in await store.messages(session_id)]


async def test_direct_tool_calls(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            result = await client.call_tool("calculator", {"expression": "2^10"})
            assert str(result.status) == "ok" and result.output["result"] == 1024
            denied = await client.call_tool("read_file", {"path": "x.txt"}, approve=lambda a: False)
            assert str(denied.status) == "denied"
            invalid = await client.call_tool("calculator", {"expr": "1"})
            assert str(invalid.status) == "error" and invalid.output["error"] == "invalid arguments"
            with pytest.raises(ServerError) as caught:
                await client.call_tool("teleport", {})
            assert caught.value.code == "not_found"
            tools = await client.list_tools()
            names = {tool.name for tool in tools.tools}
            assert "calculator" in names and "send_payment" not in names


async def test_client_offered_tool(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            await client.offer_tools(
                [OfferedTool(name="get_location", description="Where the user is.", parameters={"type": "object"})]
            )
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "where am i?")
            action = await client.next_event_of(AgentAction)
            assert str(action.executor) == "client"
            await client.send_result(action.action_id, "ok", {"city": "Lisbon"}, session_id=sid)
            event = await client.next_event_of(AgentResponse)
            assert event.content == "You are in Lisbon."
            # A result for an action nobody waits for is an error.
            await client.send_result("nope", "ok", {})
            assert (await client.next_event_of(ErrorFrame)).code == "not_found"


async def test_unknown_agent(server: RunningServer) -> None:
    async with open_client(server.url, server.token()) as client:
        with pytest.raises(ServerError) as caught:
            await client.start_session("nobody")
        assert caught.value.code == "not_found"
        assert caught.value.message.startswith("no agent named 'nobody' (known: assistant, bookkeeper")
        with pytest.raises(ServerError) as typo:
            await client.start_session("asistant")
        assert typo.value.message.startswith("no agent named 'asistant' (did you mean 'assistant'? known: assistant,")


async def test_server_sends_its_tool_list_first(server: RunningServer) -> None:
    async with open_client(server.url, server.token()) as client:
        first = await client.next_event()
        assert type(first).__name__ == "ToolList"
        assert {t.name for t in first.tools} >= {"clock", "calculator", "shell"}


async def test_expired_token_closes_the_connection(server: RunningServer) -> None:
    # A token that expires while the connection is open. On a loaded machine a 1 s token
    # can expire before the handshake is done (refused, never opened): then again with a
    # longer one, so that the close of an open connection is what gets checked.
    for attempt in range(4):
        with trio.fail_after(20):
            try:
                async with open_client(server.url, server.token(ttl_s=1.0 * 2**attempt)) as client:
                    with pytest.raises(ClientClosed):
                        while True:
                            await client.next_event()
                    assert client.ws.closed is not None and client.ws.closed.code == 4001
                    return
            except TokenRefused:  # expired before the handshake was done
                continue
    pytest.fail("every token expired before its connection was open")


async def test_invalid_arguments_from_the_model_are_shown_and_nothing_runs(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token("root", ("admin",))) as client:
            sid = (await client.start_session("bookkeeper")).session_id
            turn = await client.converse(sid, "pay 99999 EUR to bob", approve=lambda a: True)
            [result] = turn.results
            assert str(result.status) == "error"
            assert result.output["error"] == "invalid arguments"
            assert any("amount" in problem for problem in result.output["problems"])
            assert "could not use the tool 'send_payment'" in turn.response.content


async def test_max_steps_ends_a_turn(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assistant = config_dir / "agents.d" / "assistant.yaml"
    assistant.write_text(assistant.read_text().replace("max_steps: 8", "max_steps: 1"))
    server = await start_server(config_dir)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "what is 2+2")
            assert str(turn.results[0].status) == "ok"
            assert turn.response.content == "I stopped after 1 steps without finishing this turn."
            # The session is usable afterwards.
            assert str((await client.control(sid, "pause")).state) == "paused"


async def test_several_sessions_on_one_connection(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            first = (await client.start_session("assistant")).session_id
            second = (await client.start_session("bookkeeper")).session_id
            assert first != second
            assert (await client.converse(second, "what is 3*7.5")).response.content == "3*7.5 = 22.5"
            await client.control(first, "stop")
            assert (await client.converse(second, "what is 1+2")).response.content == "1+2 = 3"


async def test_reconnecting_client_takes_over_a_live_session_with_its_pending_approval(server: RunningServer) -> None:
    await _write_notes(server, "carried over\n")
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice")) as second:
            async with open_client(server.url, server.token("alice")) as first:
                sid = (await first.start_session("assistant")).session_id
                await first.send_message(sid, "read notes.txt")
                action = await first.next_event_of(AgentAction)
                state = await second.resume_session(sid, "assistant")
                assert str(state.state) == "tool_use"
                again = await second.next_event_of(AgentAction)
                assert again.action_id == action.action_id
            # The first connection is gone; the session lives on with the second.
            await second.answer(action.action_id, True)
            event = await second.next_event_of(AgentResponse)
            assert "carried over" in event.content


async def test_client_tool_offers_and_arguments_are_checked(server: RunningServer) -> None:
    from engine.protocol import ClientToolList, ErrorFrame

    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            bad = OfferedTool(name="get_location", description="x", parameters={"type": "strin"})
            await client.send(ClientToolList(id="offer1", tools=(bad,)))
            error = await client.next_event_of(ErrorFrame)
            assert (error.code, error.reply_to) == ("invalid_message", "offer1")
            schema = {"type": "object", "properties": {"precise": {"type": "boolean"}}, "additionalProperties": False}
            await client.offer_tools([OfferedTool(name="get_location", description="Where.", parameters=schema)])
            result = await client.call_tool("get_location", {"precise": "very"})
            assert str(result.status) == "error" and result.output["error"] == "invalid arguments"
            assert not isinstance(result, ErrorFrame)


async def test_approvers_list_what_waits_for_them(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice", ("user",))) as user:
            sid = (await user.start_session("assistant")).session_id
            await user.send_message(sid, 'write "x" to listed.txt')
            action = await user.next_event_of(AgentAction)
            # The requester cannot answer a level-2 action: it is not listed for her.
            assert (await user.list_actions()).actions == ()
            async with open_client(server.url, server.token("root", ("admin",))) as admin:
                [listed] = (await admin.list_actions()).actions
                assert (listed.action_id, listed.name, listed.requester, str(listed.approver)) == (
                    action.action_id, "write_file", "alice", "admin"
                )
                assert 0 < listed.expires_in_s <= 3
                await admin.answer(listed.action_id, False)
                assert (await admin.list_actions()).actions == ()


def _with_sleeper(config_dir: Path, marker: str) -> None:
    """The assistant gets the sleeper tool, called for any message with 'nap' in it."""
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text().replace("tools: [clock,", "tools: [sleeper, clock,")
    text = text.replace("  rules:\n", "  rules:\n    - match: 'nap'\n      tool: sleeper\n      answer: rested\n", 1)
    assistant.write_text(text)


async def test_cancel_during_a_running_tool_kills_it_and_keeps_the_session(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from engine.protocol import AgentResponse

    marker = unique_marker("1618")
    _with_sleeper(config_dir, marker)
    server = await start_server(config_dir)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "take a nap")
            await until_running(marker)
            state = await client.cancel_turn(sid)
            assert (str(state.state), state.session_id) == ("active", sid)
            # The tool was killed before the answer; its result and the turn's end came first.
            await until_gone(marker)
            result = await client.next_event_of(AgentResult, session_id=sid)
            assert str(result.status) == "cancelled"
            response = await client.next_event_of(AgentResponse, session_id=sid)
            assert response.cancelled is True and "rested" not in response.content
            # Cancelling again, with nothing running, is refused; the session takes the next message.
            with pytest.raises(ServerError) as idle:
                await client.cancel_turn(sid)
            assert idle.value.code == "invalid_state" and "no turn is running" in idle.value.message
            assert (await client.converse(sid, "what is 2+3")).response.content == "2+3 = 5"
    from engine.audit import query

    assert [r.outcome for r in query(server.settings.state_dir, kind="execution", tool="sleeper")] == ["cancelled"]
    # The history stays one a model accepts: the cancelled call has its tool message, then a note.
    history = await server_history(server, sid)
    roles = [m["role"] for m in history]
    assert roles[:4] == ["user", "assistant", "tool", "assistant"]
    assert "cancelled" in history[2]["content"] and "cancelled this turn" in history[3]["content"]


async def test_cancel_while_waiting_for_approval_cancels_the_approval(server: RunningServer) -> None:
    from engine.protocol import AgentResponse

    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice", ("user",))) as user:
            sid = (await user.start_session("assistant")).session_id
            await user.send_message(sid, 'write "never" to never.txt')
            action = await user.next_event_of(AgentAction, session_id=sid)
            assert action.requires_approval
            async with open_client(server.url, server.token("root", ("admin",))) as admin:
                assert [a.action_id for a in (await admin.list_actions()).actions] == [action.action_id]
                assert str((await user.cancel_turn(sid)).state) == "active"
                result = await user.next_event_of(AgentResult, session_id=sid)
                assert (result.action_id, str(result.status)) == (action.action_id, "cancelled")
                assert (await user.next_event_of(AgentResponse, session_id=sid)).cancelled is True
                assert (await admin.list_actions()).actions == ()
                await admin.answer(action.action_id, True)
                assert (await admin.next_event_of(ErrorFrame)).code == "already_decided"
    assert (await stored_action(server, action.action_id)).status == "cancelled"
    assert not (server.settings.workspace / "never.txt").exists()


async def test_cancel_of_an_idle_or_foreign_session_is_refused(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("assistant")).session_id
            with pytest.raises(ServerError) as idle:
                await alice.cancel_turn(sid)
            assert idle.value.code == "invalid_state"
            assert str((await alice.control(sid, "pause")).state) == "paused"
            with pytest.raises(ServerError) as paused:
                await alice.cancel_turn(sid)
            assert paused.value.code == "invalid_state" and "paused" in paused.value.message
            async with open_client(server.url, server.token("mallory")) as mallory:
                with pytest.raises(ServerError) as foreign:
                    await mallory.cancel_turn(sid)
                assert foreign.value.code == "forbidden"


async def test_action_list_names_direct_calls_without_a_session(server: RunningServer) -> None:
    from engine.protocol import ToolCall

    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice")) as alice:
            await alice.send(ToolCall(id="direct", name="write_file", arguments={"path": "d.txt", "content": "d"}))
            async with open_client(server.url, server.token("root", ("admin",))) as admin:
                seen = await admin.next_event_of(AgentAction)
                [listed] = (await admin.list_actions()).actions
                assert (listed.action_id, listed.session_id, listed.requester) == (seen.action_id, None, "alice")


async def test_resuming_a_session_still_winding_down_waits_for_it(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A client that reconnects at once (as the chat does) while the server is still killing the
    old connection's tool: the resume waits for the session to wind down, then takes messages."""
    marker = unique_marker("2236")
    _with_sleeper(config_dir, marker)
    server = await start_server(config_dir)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as first:
            sid = (await first.start_session("assistant")).session_id
            await first.send_message(sid, "take a nap")
            await until_running(marker)
        # The first connection is closed; its tool is being killed while we resume.
        async with open_client(server.url, server.token()) as second:
            state = await second.resume_session(sid, "assistant")
            assert (state.session_id, str(state.state)) == (sid, "active")
            await until_gone(marker)
            assert (await second.converse(sid, "what is 3+4")).response.content == "3+4 = 7"
