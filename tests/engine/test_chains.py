"""Chain tools through a real server: each step a full action (decision, approval, sandbox, audit).

The shipped example chain (tools.d/count_file_words.yaml: read_file -> text_stats) is driven
from an agent session and from a direct ``tool_call``; a denied step stops the chain naming it;
a placeholder that names nothing at run time stops it before the step is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import sandbox
from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction, AgentResult, ToolCall
from engine.toolrun import subject_workspace
from tests.engine.conftest import SLEEPER, RunningServer

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def write_workspace_file(server: RunningServer, name: str, text: str) -> None:
    workspace = subject_workspace(server.settings.workspace, "alice")
    (workspace / name).write_text(text)
    if os.geteuid() == 0:
        os.chown(workspace / name, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


async def test_the_example_chain_counts_the_words_of_a_file(server: RunningServer) -> None:
    write_workspace_file(server, "notes.txt", "one two three\nfour five\n")
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "count the words of the file notes.txt", approve=lambda a: True)
    assert turn.response.content == "The file notes.txt has 5 words and 2 lines."
    # The chain is an action, and so is each step, in order, each with its own approval.
    assert [(a.name, a.level, a.requires_approval) for a in turn.actions] == [
        ("count_file_words", 1, True), ("read_file", 1, True), ("text_stats", 0, False),
    ]
    chain_action = turn.actions[0]
    by_action = {r.action_id: r for r in turn.results}
    assert by_action[chain_action.action_id].output["words"] == 5
    assert [str(r.status) for r in turn.results] == ["ok", "ok", "ok"]
    # Every step was decided and run under audit; the steps ran before the chain's execution record.
    executions = query(server.settings.state_dir, kind="execution")
    assert [r.target for r in executions] == ["read_file", "text_stats", "count_file_words"]
    assert {r.agent for r in executions} == {"assistant"}


async def test_a_denied_step_stops_the_chain_and_is_named(server: RunningServer) -> None:
    write_workspace_file(server, "notes.txt", "secret words\n")
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(
                sid, "count the words of the file notes.txt", approve=lambda a: a.name != "read_file"
            )
    assert [a.name for a in turn.actions] == ["count_file_words", "read_file"]
    chain_result = next(r for r in turn.results if r.action_id == turn.actions[0].action_id)
    assert str(chain_result.status) == "denied"
    assert chain_result.output["step"] == 0 and chain_result.output["tool"] == "read_file"
    assert chain_result.output["error"].startswith("step 0 (read: read_file) denied: denied by alice")
    assert "could not use the tool 'count_file_words': step 0 (read: read_file) denied" in turn.response.content
    # Nothing after the denied step ran.
    assert query(server.settings.state_dir, kind="execution", tool="text_stats") == []
    assert "secret" not in turn.response.content


CHAIN_WITH_A_RUNTIME_GAP = """\
name: sum_then_measure
description: Calculates, then measures a field the calculator does not return (test).
permission_level: 0
parameters:
  type: object
  properties:
    expression: {type: string}
  required: [expression]
chain:
  - tool: calculator
    arguments: {expression: '{args.expression}'}
  - tool: text_stats
    arguments: {text: 'value {steps.0.result.no_such_field}'}
"""


async def test_a_placeholder_naming_nothing_at_run_time_stops_before_the_step(
    start_server: Callable[..., object], config_dir: Path
) -> None:
    (config_dir / "tools.d" / "sum_then_measure.yaml").write_text(CHAIN_WITH_A_RUNTIME_GAP)
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            await client.send(ToolCall(id="c1", name="sum_then_measure", arguments={"expression": "2+3"}))
            seen: list[AgentAction | AgentResult] = []
            while True:
                event = await client.next_event()
                if isinstance(event, AgentAction | AgentResult):
                    seen.append(event)
                if isinstance(event, AgentResult) and event.reply_to == "c1":
                    break
    assert [e.name for e in seen if isinstance(e, AgentAction)] == ["sum_then_measure", "calculator"]
    final = seen[-1]
    assert isinstance(final, AgentResult) and str(final.status) == "error"
    assert final.output["error"] == "step 1 (text_stats): placeholder {steps.0.result.no_such_field} names nothing"
    # Step frames are events, not the reply: only the chain's own result answers c1.
    assert [e.reply_to for e in seen if isinstance(e, AgentResult)] == [None, "c1"]
    assert query(server.settings.state_dir, kind="execution", tool="text_stats") == []


NAP_CHAIN = """\
name: nap_chain
description: Sleeps in its only step (test).
permission_level: 0
parameters: {type: object}
chain:
  - tool: sleeper
"""


async def test_cancelling_the_turn_during_a_step_ends_the_step_and_the_chain(
    start_server: Callable[..., object], config_dir: Path
) -> None:
    from engine.protocol import AgentResponse

    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker="1618.0339"))
    (config_dir / "tools.d" / "nap_chain.yaml").write_text(NAP_CHAIN)
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text().replace("tools: [clock,", "tools: [nap_chain, clock,")
    text = text.replace("  rules:\n", "  rules:\n    - match: 'nap'\n      tool: nap_chain\n      answer: rested\n", 1)
    assistant.write_text(text)
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "take a nap")
            actions: list[AgentAction] = []
            while len(actions) < 2:
                event = await client.next_event()
                if isinstance(event, AgentAction):
                    actions.append(event)
            assert [a.name for a in actions] == ["nap_chain", "sleeper"]
            await client.cancel_turn(sid)
            results: dict[str, str] = {}
            while True:
                event = await client.next_event()
                if isinstance(event, AgentResult):
                    results[event.action_id] = str(event.status)
                if isinstance(event, AgentResponse):
                    break
    assert results == {actions[1].action_id: "cancelled", actions[0].action_id: "cancelled"}
    executions = query(server.settings.state_dir, kind="execution")
    assert [(r.target, r.outcome) for r in executions] == [("sleeper", "cancelled"), ("nap_chain", "cancelled")]
