"""Custom agents in Python over a real server and client: streaming, history, approvals, and every way one misbehaves.

- test_an_agent_streams_its_answer_and_sees_the_conversation: text said through the
  context arrives as tokens, the returned string last; the next turn sees the history.
- test_an_agents_tool_needing_approval_asks_the_user: a level-1 tool called by the agent
  is shown as an action needing the user's approval; the user's "no" is the result the
  agent reads (``denied``), and nothing runs.
- test_an_agent_that_raises_ends_the_turn_and_the_session_goes_on: the exception's type
  is told, not its message; the next message is answered.
- test_an_agent_returning_something_else_than_text_is_an_error.
- test_an_agent_asking_for_tools_in_a_loop_is_stopped_at_max_steps: the third call ends
  the turn; exactly two executions are audited.
- test_an_agent_saying_too_much_is_stopped: past MAX_SAID_CHARS the turn ends, unsent.
- test_a_hanging_agent_is_ended_by_its_turn_timeout.
- test_cancel_and_stop_end_the_agents_task: a cancel ends the hanging agent (its
  ``finally`` runs), the session is active again; a stop ends the next one the same way.
- test_an_agent_that_never_awaits_is_ended_by_the_watchdog: ``while True: pass`` (and
  an ``except Exception`` around it) is interrupted after MAX_BLOCKING_S (lowered here
  to keep the test short); the turn ends with an error, the server and the session go on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.agents import MAX_SAID_CHARS
from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentResponse, LifecycleState, ResponseToken
from engine.server import agentguard
from tests.agents.conftest import add_agent
from tests.engine.conftest import RunningServer

Start = Callable[..., object]

ECHO = """
from engine.agents import BaseAgent

class Agent(BaseAgent):
    async def process_message(self, message, context):
        if message == "boom":
            raise ValueError("the secret is 42")
        if message == "number":
            return 42
        await context.say("one ")
        await context.say("two ")
        return f"history {len(context.history)}, subject {context.subject}, by {context.delegated_by}"
"""


async def _converse(server: RunningServer, agent: str, *messages: str) -> list[object]:
    turns = []
    async with open_client(server.url, server.token()) as client:
        sid = (await client.start_session(agent)).session_id
        for message in messages:
            turns.append(await client.converse(sid, message))
    return turns


async def test_an_agent_streams_its_answer_and_sees_the_conversation(agents_config: Path, start_server: Start) -> None:
    add_agent(agents_config, "echo", ECHO)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        first, second = await _converse(server, "echo", "hello", "again")
    assert first.tokens == ("one ", "two ", "history 0, subject alice, by None")  # type: ignore[attr-defined]
    assert first.response.content == "one two history 0, subject alice, by None"  # type: ignore[attr-defined]
    assert second.response.content.endswith("history 2, subject alice, by None")  # type: ignore[attr-defined]


async def test_an_agents_tool_needing_approval_asks_the_user(agents_config: Path, start_server: Start) -> None:
    add_agent(agents_config, "reader", """
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                result = await context.request_tool_use("read_file", {"path": "notes.txt"})
                return f"{result.status}: {result.reason}"
    """, "tools: [read_file]\napproval_timeout: 5s\n")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("reader")).session_id
            turn = await client.converse(sid, "read my notes", approve=lambda action: False)
    [action] = turn.actions
    assert action.name == "read_file" and action.requires_approval and str(action.approver) == "user"
    assert turn.response.content.startswith("denied: denied by alice")
    assert query(server.settings.state_dir, kind="execution", tool="read_file") == []
    [approval] = query(server.settings.state_dir, kind="approval", tool="read_file")
    assert approval.agent == "reader" and approval.outcome == "denied"


async def test_an_agent_that_raises_ends_the_turn_and_the_session_goes_on(
    agents_config: Path, start_server: Start
) -> None:
    add_agent(agents_config, "echo", ECHO)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        failed, after = await _converse(server, "echo", "boom", "hello")
    text = failed.response.content  # type: ignore[attr-defined]
    assert text == "(the agent 'echo' failed (ValueError); the error is in the server log)"
    assert "42" not in text
    assert after.response.content.startswith("one two history 2")  # type: ignore[attr-defined]


async def test_an_agent_returning_something_else_than_text_is_an_error(
    agents_config: Path, start_server: Start
) -> None:
    add_agent(agents_config, "echo", ECHO)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        [turn] = await _converse(server, "echo", "number")
    assert turn.response.content == "(process_message returned a int, not a string or None)"  # type: ignore[attr-defined]


async def test_an_agent_asking_for_tools_in_a_loop_is_stopped_at_max_steps(
    agents_config: Path, start_server: Start
) -> None:
    add_agent(agents_config, "looper", """
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                while True:
                    try:
                        await context.call_tool("calculator", {"expression": "1+1"})
                    except Exception:
                        pass  # an agent cannot talk its way past the bound
    """, "tools: [calculator]\nmax_steps: 2\n")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(30):
        [turn] = await _converse(server, "looper", "go")
    assert turn.response.content == "I stopped after 2 steps without finishing this turn."  # type: ignore[attr-defined]
    assert len(turn.actions) == 2  # type: ignore[attr-defined]
    assert len(query(server.settings.state_dir, kind="execution", tool="calculator")) == 2


async def test_an_agent_saying_too_much_is_stopped(agents_config: Path, start_server: Start) -> None:
    add_agent(agents_config, "talker", f"""
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                await context.say("short. ")
                await context.say("x" * {MAX_SAID_CHARS})
                return "never said"
    """)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        [turn] = await _converse(server, "talker", "talk")
    assert turn.response.content == (  # type: ignore[attr-defined]
        f"short. \nthe agent said more than {MAX_SAID_CHARS} characters in one turn"
    )


async def test_a_hanging_agent_is_ended_by_its_turn_timeout(agents_config: Path, start_server: Start) -> None:
    add_agent(agents_config, "hang", """
        import trio
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                await context.say("thinking")
                await trio.sleep_forever()
    """, "turn_timeout: 500ms\n")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        [turn] = await _converse(server, "hang", "hello")
    assert turn.response.content == "thinking\n(the agent 'hang' did not finish within 0.5s)"  # type: ignore[attr-defined]


async def test_cancel_and_stop_end_the_agents_task(agents_config: Path, start_server: Start, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    add_agent(agents_config, "hang", f"""
        import trio
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                await context.say("working")
                try:
                    await trio.sleep_forever()
                finally:
                    with open({str(marks)!r}, "a") as marks:
                        marks.write(message + "\\n")
    """)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("hang")).session_id
            await client.send_message(sid, "first")
            await client.next_event_of(ResponseToken, session_id=sid)
            state = await client.cancel_turn(sid)
            assert state.state == LifecycleState.ACTIVE
            response = await client.next_event_of(AgentResponse, session_id=sid)
            assert response.cancelled and response.content == "working"
            await client.send_message(sid, "second")
            await client.next_event_of(ResponseToken, session_id=sid)
            stopped = await client.control(sid, "stop")
            assert stopped.state == LifecycleState.TERMINATED
    assert marks.read_text() == "first\nsecond\n"


async def test_an_agent_that_never_awaits_is_ended_by_the_watchdog(
    agents_config: Path, start_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agentguard, "MAX_BLOCKING_S", 0.3)
    add_agent(agents_config, "spin", """
        from engine.agents import BaseAgent

        class Agent(BaseAgent):
            async def process_message(self, message, context):
                if message == "spin":
                    try:
                        while True:
                            pass
                    except Exception:
                        return "swallowed"
                return "still here"
    """)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        spun, after = await _converse(server, "spin", "spin", "hello")
    assert spun.response.content == (  # type: ignore[attr-defined]
        "(the agent 'spin' held the server for 0.3s without awaiting: its turn was ended)"
    )
    assert after.response.content == "still here"  # type: ignore[attr-defined]
