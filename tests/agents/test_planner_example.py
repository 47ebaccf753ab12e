"""The shipped worked example, offline: ``planner`` (Python) asks ``weather`` (rules model) and the calculator.

- test_plan_a_day_in_paris: the README's exchange, over a real server and client: the
  answer holds the sample forecast and the summed cost; the user saw the delegation
  (``ask_agent``), the weather agent's read, the calculator call and the post to the
  session board as actions; the audit links the weather agent's read to the planner's
  delegation; the next turn ("what is on the board?") reads the plan back from the board.
- test_the_assistant_hands_plan_a_day_to_the_planner: the rules-model assistant's rule
  asks the planner, which asks the weather agent (two delegations deep), offline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from engine.audit import query
from engine.client import open_client
from tests.engine.conftest import RunningServer


async def test_plan_a_day_in_paris(agents_config: Path, start_server: Callable[..., object]) -> None:
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("planner")).session_id
            turn = await client.converse(sid, "plan a day in Paris")
            board = await client.converse(sid, "what is on the board?")
    text = turn.response.content
    assert "Weather: Paris (sample forecast" in text and "sunny in the morning" in text
    assert "Plan for Paris: a museum in the morning, then lunch, then two metro rides." in text
    assert text.endswith("Estimated cost: 46.3 EUR.") and turn.text == text
    names = [(str(a.kind), a.name) for a in turn.actions]
    assert names == [("tool", "ask_agent"), ("resource", "file://local/documents/forecasts/paris.txt"),
                     ("tool", "calculator"), ("tool", "post_to_board")]
    assert turn.actions[0].arguments == {"agent": "weather", "message": "weather in paris"}
    assert [str(r.status) for r in turn.results] == ["ok", "ok", "ok", "ok"]
    # The weather agent's read finishes first; the delegation's result carries its answer.
    delegation = next(r for r in turn.results if r.action_id == turn.actions[0].action_id)
    assert delegation.output["agent"] == "weather" and "sunny" in delegation.output["answer"]

    state = server.settings.state_dir
    [decision] = [r for r in query(state, kind="decision") if r.action == "agent.delegate"]
    assert (decision.agent, decision.target, decision.subject) == ("planner", "weather", "alice")
    details = decision.to_dict()["details"]
    assert details["delegated_by"] == "planner" and details["action_id"] == turn.actions[0].action_id
    [read, board_read] = query(state, kind="resource_read")
    assert board_read.target == "board://session" and board_read.agent == "planner"
    read_details = read.to_dict()["details"]
    assert read.agent == "weather"
    assert read_details["delegation"] == {"action_id": turn.actions[0].action_id, "by": "planner", "depth": 1}
    [execution] = [r for r in query(state, kind="execution") if r.action == "agent.delegate"]
    assert execution.outcome == "ok" and execution.agent == "planner"

    # The plan was left on the session board; the next turn reads it back.
    assert board.response.content == (
        "#1 (planner): Plan for Paris: a museum in the morning, then lunch, then two metro rides. "
        "Estimated cost: 46.3 EUR."
    )
    assert [(str(a.kind), a.name) for a in board.actions] == [("resource", "board://session")]


async def test_the_assistant_hands_plan_a_day_to_the_planner(
    agents_config: Path, start_server: Callable[..., object]
) -> None:
    """The rules-model assistant asks the planner (``ask_agent`` in a rule), which asks the weather agent:
    two delegations deep, offline; the user sees every action, and the planner's answer is the assistant's."""
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "plan a day in Paris")
    assert turn.response.content.startswith("Weather: Paris (sample forecast")
    assert turn.response.content.endswith("Estimated cost: 46.3 EUR.")
    assert [a.name for a in turn.actions] == [
        "ask_agent", "ask_agent", "file://local/documents/forecasts/paris.txt", "calculator", "post_to_board"]
    assert [a.arguments.get("agent") for a in turn.actions[:2]] == ["planner", "weather"]
    decisions = [r for r in query(server.settings.state_dir, kind="decision") if r.action == "agent.delegate"]
    assert [(d.agent, d.target) for d in decisions] == [("assistant", "planner"), ("planner", "weather")]
    assert decisions[1].to_dict()["details"]["chain"] == ["assistant", "planner"]
