"""Dispatch without a socket: a real hub, connections over memory channels, trio's MockClock.

Each test serves one :class:`~engine.server.connection.Connection` over a
:class:`~tests.engine.in_memory.ChannelTransport` (no WebSocket, no port) on a real hub
(SQLite store, audit writer, the shipped configuration copied to tmp):

- ``test_a_turn_with_a_level_1_approval``: "read notes.txt" announces ``read_file`` (level 1,
  the user approves), the approval is answered, the tool runs in its sandbox and the answer
  quotes the file; decision, approval and execution are in the audit log.
- ``test_an_approval_times_out_on_the_mock_clock``: the same request, never answered, with a
  10-minute approval timeout: under ``autojump_clock`` the result is ``timeout`` after 10
  virtual minutes and no real waiting; the approval is audited ``expired``; nothing runs.
- ``test_bad_frames_are_answered_and_the_connection_goes_on``: text that is not JSON, an
  unknown frame type, a binary frame and a frame missing a field each get their own error
  frame; a valid request after them is answered.
- ``test_a_peer_that_stops_answering_pings_is_closed``: under ``autojump_clock`` a peer that
  never answers a ping is closed with 4003 after ``ping_interval + ping_timeout``.
- ``test_direct_calls_at_once_each_get_their_action_then_their_result``: eight ``tool_call``
  frames sent without waiting (sandboxed calculator calls and calls refused for their arguments, whose
  results are written by their own handler task, not a writer task of their own): each
  gets exactly one ``agent_action`` and then one ``agent_result``, with the right output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
import trio.testing

import sandbox
from engine.protocol import (
    ActionApproval,
    ActionList,
    ActionListRequest,
    AgentAction,
    AgentConnect,
    AgentResponse,
    AgentResult,
    AgentState,
    ErrorFrame,
    ToolCall,
    ToolList,
    UserMessage,
    new_id,
)
from engine.server.connection import CLOSE_NO_PONG
from engine.toolrun import subject_workspace
from tests.engine.conftest import copy_example_config
from tests.engine.in_memory import ChannelPeer, connect, running_hub


async def _start_session(peer: ChannelPeer) -> str:
    await peer.next_of(ToolList)  # the connection's first frame
    await peer.send(AgentConnect(id=new_id(), agent="assistant"))
    state = await peer.next_of(AgentState)
    assert str(state.state) == "active"
    return str(state.session_id)


async def test_a_turn_with_a_level_1_approval(tmp_path: Path, state_dir: Path) -> None:
    config = copy_example_config(tmp_path / "config", approval_timeout="2m")
    with trio.fail_after(30):
        async with running_hub(config, state_dir) as hub, trio.open_nursery() as nursery:
            notes = subject_workspace(hub.settings.workspace, "alice") / "notes.txt"
            notes.write_text("buy milk\n")
            if os.geteuid() == 0:
                os.chown(notes, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
            peer = connect(nursery, hub)
            session_id = await _start_session(peer)
            await peer.send(UserMessage(id=new_id(), session_id=session_id, content="read notes.txt"))
            action = await peer.next_of(AgentAction)
            assert (action.name, action.level, action.requires_approval, str(action.approver)) == (
                "read_file", 1, True, "user"
            )
            await peer.send(ActionApproval(id=new_id(), action_id=action.action_id, approved=True))
            result = await peer.next_of(AgentResult)
            assert (result.action_id, str(result.status)) == (action.action_id, "ok")
            response = await peer.next_of(AgentResponse)
            assert "buy milk" in response.content
            nursery.cancel_scope.cancel()
        records = await hub.audit.query(subject="alice", tool="read_file")
    assert [(r.kind, r.outcome, r.decided_by, r.approver) for r in records] == [
        ("decision", "require_approval", "rule", None),
        ("approval", "approved", "person", "alice"),
        ("execution", "ok", None, None),
    ]


async def test_an_approval_times_out_on_the_mock_clock(
    tmp_path: Path, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = copy_example_config(tmp_path / "config", approval_timeout="10m")
    # No fail_after: the mock clock would jump to it while a store write runs in its thread. A hang
    # cannot last: the keepalive's deadlines move the clock on until the token expires and the peer ends.
    async with running_hub(config, state_dir) as hub, trio.open_nursery() as nursery:
        peer = connect(nursery, hub)
        session_id = await _start_session(peer)
        await peer.send(UserMessage(id=new_id(), session_id=session_id, content="read notes.txt"))
        action = await peer.next_of(AgentAction)
        asked_at = trio.current_time()
        result = await peer.next_of(AgentResult)
        assert (result.action_id, str(result.status)) == (action.action_id, "timeout")
        assert result.output == {"error": "no approval within 600s"}
        assert trio.current_time() - asked_at >= 600
        response = await peer.next_of(AgentResponse)
        assert "could not use the tool" in response.content
        nursery.cancel_scope.cancel()
    records = await hub.audit.query(subject="alice", tool="read_file")
    assert [(r.kind, r.outcome) for r in records] == [("decision", "require_approval"), ("approval", "expired")]


async def test_bad_frames_are_answered_and_the_connection_goes_on(tmp_path: Path, state_dir: Path) -> None:
    config = copy_example_config(tmp_path / "config")
    with trio.fail_after(30):
        async with running_hub(config, state_dir) as hub, trio.open_nursery() as nursery:
            peer = connect(nursery, hub)
            await peer.next_of(ToolList)
            bad: list[str | bytes] = [
                "this is not JSON",
                json.dumps({"type": "no_such_frame", "id": "x1", "payload": {}}),
                b"\x00\x01",
                json.dumps({"type": "agent_connect", "id": "x2", "payload": {}}),
            ]
            codes = []
            for message in bad:
                await peer.send_raw(message)
                error = await peer.next_of(ErrorFrame)
                codes.append((str(error.code), error.reply_to))
            assert codes == [
                ("bad_json", None), ("unknown_type", "x1"), ("bad_json", None), ("invalid_message", "x2"),
            ]
            request = ActionListRequest(id=new_id())
            await peer.send(request)
            answer = await peer.next_of(ActionList)
            assert answer.reply_to == request.id and answer.actions == ()
            nursery.cancel_scope.cancel()


async def test_a_peer_that_stops_answering_pings_is_closed(
    tmp_path: Path, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = copy_example_config(tmp_path / "config")
    async with running_hub(config, state_dir, ping_interval_s=30.0, ping_timeout_s=10.0) as hub, \
            trio.open_nursery() as nursery:
        started = trio.current_time()
        peer = connect(nursery, hub, answers_pings=False)
        with pytest.raises(trio.EndOfChannel):
            while True:
                await peer.next_of(ErrorFrame)  # nothing but the tool list comes, then the end
        assert peer.transport.closed_with == (CLOSE_NO_PONG, "no pong: the connection looks dead")
        assert trio.current_time() - started >= 40


async def test_direct_calls_at_once_each_get_their_action_then_their_result(tmp_path: Path, state_dir: Path) -> None:
    config = copy_example_config(tmp_path / "config")
    with trio.fail_after(60):
        async with running_hub(config, state_dir) as hub, trio.open_nursery() as nursery:
            peer = connect(nursery, hub)
            await peer.next_of(ToolList)
            calls = {}
            for i in range(8):
                # Odd: run in the sandbox; even: refused before any decision (an empty expression).
                frame = ToolCall(id=new_id(), name="calculator", arguments={"expression": f"{i}*7" if i % 2 else ""})
                calls[frame.id] = frame
                await peer.send(frame)
            seen: dict[str, list[AgentAction | AgentResult]] = {call_id: [] for call_id in calls}
            while sum(isinstance(f, AgentResult) for frames in seen.values() for f in frames) < len(calls):
                event = await peer.next_of(AgentAction, AgentResult, ErrorFrame)
                assert not isinstance(event, ErrorFrame), event
                seen[event.reply_to].append(event)
            for call_id, frames in seen.items():
                action, result = frames
                assert isinstance(action, AgentAction) and isinstance(result, AgentResult), frames
                assert result.action_id == action.action_id
                expression = calls[call_id].arguments["expression"]
                if expression:
                    assert str(result.status) == "ok", result
                    assert result.output == {"expression": expression, "result": int(expression.split("*")[0]) * 7}
                else:
                    assert str(result.status) == "error" and result.output["error"] == "invalid arguments", result
            nursery.cancel_scope.cancel()
