"""A call's sandbox starts while its decision is committed, yet nothing runs unrecorded.

Each test runs with the tool in a warm pool (its worker forked ahead: the decision is
committed first, in the call's task) and in a sandbox of its own (``namespaces``: it
starts while the decision is committed, in a task beside it).

- ``test_a_call_whose_decision_cannot_be_recorded_never_runs``: a level-0 tool that
  leaves a file in the caller's workspace runs once (the control), then a row forged
  behind the audit writer's back makes its next commit fail; the same call is refused
  with an error, the client never sees its ``agent_action``, and the file is not made
  again: the tool got no input before its decision was on disk.
- ``test_the_decision_is_recorded_before_the_execution``: a call that ran left its
  decision record before its execution record, and the client saw the action before
  its result.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import sandbox
from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction, AgentResult, ErrorFrame, ToolCall
from tests.audit.conftest import ANY_KEY, event
from tests.engine.conftest import RunningServer

MARK = """\
name: mark
description: Leaves a file in the caller's workspace (test tool).
permission_level: 0
command: [/bin/sh, -c, "echo ran >> ran.txt && echo '{\\"ok\\": true}'"]
parameters: {type: object}
sandbox:
  isolation: pool
  timeout: 10s
  workspace: write
"""


@pytest.fixture(params=["pool", "namespaces"])
async def marking(
    start_server: Callable[..., object], config_dir: Path, request: pytest.FixtureRequest
) -> RunningServer:
    isolation = request.param
    problem = sandbox.detect().pool_problem() if isolation == "pool" else sandbox.detect().namespaces_problem()
    if problem is not None:
        pytest.skip(f"no {isolation} sandbox here: {problem}")
    (config_dir / "tools.d" / "mark.yaml").write_text(MARK.replace("isolation: pool", f"isolation: {isolation}"))
    return await start_server(config_dir)  # type: ignore[no-any-return, operator]


def _marks(server: RunningServer) -> list[Path]:
    return sorted(Path(server.settings.workspace).rglob("ran.txt"))


def _break_the_next_commit(state: Path) -> None:
    """Append a record at the writer's next sequence number: its next commit conflicts."""
    conn = sqlite3.connect(state / "audit.db", isolation_level=None)
    try:
        seq, head = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        forged = event(1).prepare(digest_key=ANY_KEY).seal(seq + 1, head)
        conn.execute(f"INSERT INTO audit_records VALUES ({', '.join('?' * len(forged.row()))})", forged.row())
    finally:
        conn.close()


async def _frames_of(client, call_id: str) -> list[object]:  # type: ignore[no-untyped-def]
    """The frames answering ``call_id`` (its action and its result, or an error)."""
    seen: list[object] = []
    while True:
        frame = await client.next_event()
        if isinstance(frame, ErrorFrame) and frame.reply_to == call_id:
            return [*seen, frame]
        if getattr(frame, "reply_to", None) == call_id or isinstance(frame, AgentAction | AgentResult):
            seen.append(frame)
            if isinstance(frame, AgentResult):
                return seen


async def test_a_call_whose_decision_cannot_be_recorded_never_runs(marking: RunningServer) -> None:
    with trio.fail_after(60):
        async with open_client(marking.url, marking.token()) as client:
            ran = await client.call_tool("mark", {})
            assert ran.status == "ok", ran
            assert [p.read_text() for p in _marks(marking)] == ["ran\n"]

            _break_the_next_commit(marking.settings.state_dir)
            await client.send(ToolCall(id="refused", name="mark", arguments={}))
            frames = await _frames_of(client, "refused")
    assert not any(isinstance(f, AgentAction) for f in frames), frames
    assert isinstance(frames[-1], ErrorFrame | AgentResult), frames
    if isinstance(frames[-1], AgentResult):
        assert frames[-1].status != "ok", frames
    assert [p.read_text() for p in _marks(marking)] == ["ran\n"]  # not run a second time


async def test_the_decision_is_recorded_before_the_execution(marking: RunningServer) -> None:
    with trio.fail_after(60):
        async with open_client(marking.url, marking.token()) as client:
            await client.send(ToolCall(id="c1", name="mark", arguments={}))
            frames = await _frames_of(client, "c1")
    assert [type(f) for f in frames] == [AgentAction, AgentResult], frames
    action, result = frames
    assert result.status == "ok" and result.action_id == action.action_id  # type: ignore[attr-defined]
    records = [r for r in query(marking.settings.state_dir) if r.target == "mark"]
    assert [r.kind for r in records] == ["decision", "execution"]
    assert records[0].seq < records[1].seq and records[0].outcome == "allow"

