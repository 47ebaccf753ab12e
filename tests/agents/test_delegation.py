"""Agents asking agents, over a real server and client: policy, approvals, bounds, cancellation, audit links.

The agents here are ``relay`` agents (Python): for ``"<agent>: <rest>"`` each asks
``<agent>`` to answer ``<rest>`` and answers with the JSON of what came back.

- test_a_delegation_loop_is_refused: a asks b asks a: the second ask is denied as a
  loop (audited), nothing runs for it, and a's answer says so.
- test_delegation_depth_is_bounded: a -> b -> c -> d -> e: the fourth ask goes past
  MAX_DEPTH and is refused ``limit_exceeded``.
- test_one_turn_may_delegate_at_most_max_delegations_times: the 17th ask of one turn is refused.
- test_an_agent_outside_the_delegates_list_is_denied_not_run.
- test_a_policy_deny_refuses_the_delegation_for_that_user_only: a rule denying alice
  ``agent.delegate`` on b: alice is refused (the rule named), bob is answered.
- test_a_level_3_agent_is_asked_only_where_a_rule_names_it.
- test_a_delegation_level_1_asks_the_user_first: the ``ask_agent`` action needs the
  user's approval; refused, the asked agent never runs; approved, it does.
- test_the_childs_own_approvals_reach_the_user_and_are_linked_in_the_audit: the asked
  agent's level-1 tool call is shown to the user, who approves it; its audit records
  name the asked agent and the delegation.
- test_a_failing_or_hanging_child_is_a_result_for_the_parent: the child's exception
  (``error``) and its turn_timeout (``timeout``) come back to the asking agent, whose
  turn goes on.
- test_cancelling_the_turn_stops_the_child: the user's cancel reaches the hanging
  child (its ``finally`` runs); the delegation's execution is audited as cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from engine.client import Turn, open_client
from engine.protocol import AgentAction, AgentResponse, LifecycleState
from engine.server.delegation import MAX_DELEGATIONS, MAX_DEPTH
from tests.agents.conftest import add_agent
from tests.engine.conftest import RunningServer

Start = Callable[..., object]

RELAY = """
import json
import trio
from engine.agents import BaseAgent

class Agent(BaseAgent):
    async def process_message(self, message, context):
        if message == "raise":
            raise RuntimeError("child broke")
        if message == "hang":
            try:
                await trio.sleep_forever()
            finally:
                with open(MARKS, "a") as marks:
                    marks.write(context.agent + "\\n")
        if message.startswith("many "):
            _, target, times = message.split()
            statuses = [(await context.delegate(target, "hello")).status for _ in range(int(times))]
            return json.dumps(statuses)
        if message.startswith("read "):
            result = await context.call_tool("read_file", {"path": message[5:]})
            return json.dumps({"status": result.status, "reason": result.reason})
        target, sep, rest = message.partition(": ")
        if not sep:
            return f"{context.agent} answers {message!r} for {context.subject} (asked by {context.delegated_by})"
        result = await context.delegate(target, rest)
        return json.dumps({"status": result.status, "output": result.output, "reason": result.reason})
"""


def relay(root: Path, name: str, delegates: list[str], *, extra: str = "", marks: Path | None = None) -> None:
    module = RELAY.replace("MARKS", repr(str(marks or root / "marks")))
    add_agent(root, name, module, f"delegates: [{', '.join(delegates)}]\ndelegation_level: 0\n"
                                  f"approval_timeout: 5s\n{extra}")


async def _turn(server: RunningServer, agent: str, message: str, *, sub: str = "alice",
                approve: Callable[[AgentAction], bool] | None = None) -> Turn:
    async with open_client(server.url, server.token(sub)) as client:
        sid = (await client.start_session(agent)).session_id
        return await client.converse(sid, message, approve=approve)


def _answer(turn: Turn) -> dict[str, Any]:
    return json.loads(turn.response.content)  # type: ignore[no-any-return]


async def test_a_delegation_loop_is_refused(agents_config: Path, start_server: Start) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", ["a"])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _turn(server, "a", "b: a: hello")
    outer = _answer(turn)
    assert outer["status"] == "ok"
    inner = json.loads(outer["output"]["answer"])
    assert inner["status"] == "denied" and inner["reason"] == "delegation loop: a -> b -> a (refused)"
    assert [str(r.status) for r in turn.results] == ["denied", "ok"]
    decisions = [r for r in query(server.settings.state_dir, kind="decision") if r.action == "agent.delegate"]
    assert [(d.agent, d.target, d.outcome) for d in decisions] == [("a", "b", "allow"), ("b", "a", "denied")]
    executions = [r for r in query(server.settings.state_dir, kind="execution") if r.action == "agent.delegate"]
    assert [(e.agent, e.target) for e in executions] == [("a", "b")]


async def test_delegation_depth_is_bounded(agents_config: Path, start_server: Start) -> None:
    names = ["a", "b", "c", "d", "e"]
    for name, following in zip(names, names[1:] + ["a"], strict=True):
        relay(agents_config, name, [following])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    assert MAX_DEPTH == 3
    with trio.fail_after(20):
        turn = await _turn(server, "a", "b: c: d: e: hello")
    answer = _answer(turn)
    for _ in range(3):
        assert answer["status"] == "ok"
        answer = json.loads(answer["output"]["answer"])
    assert answer["status"] == "limit_exceeded"
    assert answer["reason"] == "delegation too deep: a -> b -> c -> d -> e goes past 3 agents below the first"


async def test_one_turn_may_delegate_at_most_max_delegations_times(agents_config: Path, start_server: Start) -> None:
    relay(agents_config, "a", ["b"], extra=f"max_steps: {MAX_DELEGATIONS + 2}\n")
    relay(agents_config, "b", [])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(60):
        turn = await _turn(server, "a", f"many b {MAX_DELEGATIONS + 1}")
    assert json.loads(turn.response.content) == ["ok"] * MAX_DELEGATIONS + ["limit_exceeded"]


async def test_an_agent_outside_the_delegates_list_is_denied_not_run(agents_config: Path, start_server: Start) -> None:
    relay(agents_config, "a", ["weather"])
    relay(agents_config, "b", [])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _turn(server, "a", "b: hello")
    answer = _answer(turn)
    assert answer["status"] == "denied"
    assert answer["reason"] == "agent 'a' may not ask agent 'b' (its delegates: weather)"
    assert [r for r in query(server.settings.state_dir, kind="execution") if r.action == "agent.delegate"] == []


async def test_a_policy_deny_refuses_the_delegation_for_that_user_only(
    agents_config: Path, start_server: Start
) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", [])
    (agents_config / "policies" / "no-b.yaml").write_text(
        "name: no-b\ndescription: Alice may not have agents ask b.\nrules:\n"
        "  - id: alice-not-b\n    effect: deny\n    subjects: {subs: [alice]}\n"
        "    actions: [agent.delegate]\n    targets: {agents: [b]}\n"
    )
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        refused = _answer(await _turn(server, "a", "b: hello"))
        allowed = _answer(await _turn(server, "a", "b: hello", sub="bob"))
    assert refused["status"] == "denied" and refused["reason"].startswith("denied by rule alice-not-b")
    assert allowed["status"] == "ok" and allowed["output"]["answer"] == "b answers 'hello' for bob (asked by a)"


async def test_a_level_3_agent_is_asked_only_where_a_rule_names_it(agents_config: Path, start_server: Start) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", [])
    (agents_config / "agents.d" / "b.yaml").write_text(
        (agents_config / "agents.d" / "b.yaml").read_text().replace("delegation_level: 0", "delegation_level: 3"))
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        answer = _answer(await _turn(server, "a", "b: hello"))
    assert answer["status"] == "denied"
    assert answer["reason"] == "b is level 3 (system restricted): no rule names it for this subject"


@pytest.mark.parametrize("approved", [False, True])
async def test_a_delegation_level_1_asks_the_user_first(
    agents_config: Path, start_server: Start, approved: bool
) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", [])
    (agents_config / "agents.d" / "b.yaml").write_text(
        (agents_config / "agents.d" / "b.yaml").read_text().replace("delegation_level: 0", "delegation_level: 1"))
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _turn(server, "a", "b: hello", approve=lambda action: approved)
    [action] = turn.actions
    assert action.name == "ask_agent" and action.requires_approval and str(action.approver) == "user"
    assert action.arguments == {"agent": "b", "message": "hello"} and action.level == 1
    answer = _answer(turn)
    if approved:
        assert answer["status"] == "ok" and answer["output"]["answer"].startswith("b answers 'hello'")
    else:
        assert answer["status"] == "denied" and answer["reason"].startswith("denied by alice")
    [approval] = query(server.settings.state_dir, kind="approval")
    assert (approval.action, approval.agent, approval.outcome) == (
        "agent.delegate", "a", "approved" if approved else "denied")
    executions = [r for r in query(server.settings.state_dir, kind="execution") if r.action == "agent.delegate"]
    assert len(executions) == (1 if approved else 0)


async def test_the_childs_own_approvals_reach_the_user_and_are_linked_in_the_audit(
    agents_config: Path, start_server: Start
) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", [], extra="tools: [read_file]\n")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _turn(server, "a", "b: read notes.txt", approve=lambda action: action.name == "read_file")
    delegation, read = turn.actions
    assert (delegation.name, read.name) == ("ask_agent", "read_file")
    assert read.requires_approval and read.session_id == delegation.session_id
    assert _answer(turn)["status"] == "ok"  # the read ran (whatever the file holds)
    [approval] = query(server.settings.state_dir, kind="approval", tool="read_file")
    [execution] = query(server.settings.state_dir, kind="execution", tool="read_file")
    for record in (approval, execution):
        assert record.agent == "b" and record.outcome in ("approved", "ok", "error")
        assert record.to_dict()["details"]["delegation"] == {"action_id": delegation.action_id, "by": "a", "depth": 1}


async def test_a_failing_or_hanging_child_is_a_result_for_the_parent(agents_config: Path, start_server: Start) -> None:
    relay(agents_config, "a", ["b"])
    relay(agents_config, "b", [], extra="turn_timeout: 300ms\n")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        failed = _answer(await _turn(server, "a", "b: raise"))
        hung = _answer(await _turn(server, "a", "b: hang"))
    assert failed["status"] == "error"
    assert failed["reason"] == "the agent 'b' failed (RuntimeError); the error is in the server log"
    assert hung["status"] == "timeout" and hung["reason"] == "the agent 'b' did not finish within 0.3s"


async def test_cancelling_the_turn_stops_the_child(agents_config: Path, start_server: Start, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    relay(agents_config, "a", ["b"], marks=marks)
    relay(agents_config, "b", [], marks=marks)
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("a")).session_id
            await client.send_message(sid, "b: hang")
            action = await client.next_event_of(AgentAction, session_id=sid)
            assert action.name == "ask_agent"
            assert (await client.cancel_turn(sid)).state == LifecycleState.ACTIVE
            response = await client.next_event_of(AgentResponse, session_id=sid)
            assert response.cancelled
    assert marks.read_text() == "b\n"
    [execution] = [r for r in query(server.settings.state_dir, kind="execution") if r.action == "agent.delegate"]
    assert execution.outcome == "cancelled"
