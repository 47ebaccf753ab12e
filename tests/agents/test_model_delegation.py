"""Delegation with real model agents: the scripted OpenAI-compatible server (tests/models/scripted.py) plays them.

- test_a_model_asks_the_weather_agent_through_ask_agent: the model is offered
  ``ask_agent``, calls it for ``weather``; the rules-model weather agent's answer is the
  tool result the model reads back.
- test_a_model_asking_an_agent_outside_its_delegates_is_denied: ``bookkeeper`` is not
  a delegate: denied, the model reads why, nothing runs.
- test_a_model_without_delegates_cannot_use_ask_agent: an agent with no ``delegates``
  is not offered the tool; a model calling it anyway is refused like any tool outside
  the agent's list.
- test_a_python_agent_asks_a_model_agent_whose_tool_call_runs_as_its_own: the child's
  model loop runs the calculator under the child's name, linked to the delegation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from tests.agents.test_delegation import relay
from tests.engine.conftest import RunningServer
from tests.models import scripted as s
from tests.models.conftest import model_file, scripted  # noqa: F401 - fixture

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
Start = Callable[..., object]


def llm_agent(root: Path, base_url: str, extra: str = "") -> None:
    (root / "models.d" / "fast.yaml").write_text(model_file("fast", base_url))
    (root / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: An agent on a scripted model (test).\ntools: [calculator]\n"
        f"approval_timeout: 3s\nmodel: fast\n{extra}"
    )


async def _converse(server: RunningServer, agent: str, message: str):  # type: ignore[no-untyped-def]
    async with open_client(server.url, server.token()) as client:
        sid = (await client.start_session(agent)).session_id
        return await client.converse(sid, message)


async def test_a_model_asks_the_weather_agent_through_ask_agent(
    scripted: s.ScriptedServer, agents_config: Path, start_server: Start  # noqa: F811
) -> None:
    llm_agent(agents_config, scripted.base_url, "delegates: [weather]\n")
    scripted.script("fast", [s.tool_call("ask_agent", {"agent": "weather", "message": "weather in paris"}),
                             s.text("Sunny, then clouds.")])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _converse(server, "llm", "what is the weather like in Paris?")
    assert turn.response.content == "Sunny, then clouds."
    assert "ask_agent" in [t["function"]["name"] for t in scripted.requests[0].body["tools"]]
    tool_message = scripted.requests[1].body["messages"][-1]
    body = json.loads(tool_message["content"])
    assert body["status"] == "ok" and body["output"]["agent"] == "weather"
    assert "sunny in the morning" in body["output"]["answer"]
    [decision] = [r for r in query(server.settings.state_dir, kind="decision") if r.action == "agent.delegate"]
    assert (decision.agent, decision.target, decision.outcome) == ("llm", "weather", "allow")


async def test_a_model_asking_an_agent_outside_its_delegates_is_denied(
    scripted: s.ScriptedServer, agents_config: Path, start_server: Start  # noqa: F811
) -> None:
    llm_agent(agents_config, scripted.base_url, "delegates: [weather]\n")
    scripted.script("fast", [s.tool_call("ask_agent", {"agent": "bookkeeper", "message": "pay 5 EUR to bob"}),
                             s.text("I may not.")])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _converse(server, "llm", "pay bob")
    [result] = turn.results
    assert str(result.status) == "denied"
    assert result.output["error"] == "agent 'llm' may not ask agent 'bookkeeper' (its delegates: weather)"
    assert '"status": "denied"' in scripted.requests[1].body["messages"][-1]["content"]
    assert [r for r in query(server.settings.state_dir, kind="execution")] == []


async def test_a_model_without_delegates_cannot_use_ask_agent(
    scripted: s.ScriptedServer, agents_config: Path, start_server: Start  # noqa: F811
) -> None:
    llm_agent(agents_config, scripted.base_url)
    scripted.script("fast", [s.tool_call("ask_agent", {"agent": "weather", "message": "weather in paris"}),
                             s.text("No.")])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _converse(server, "llm", "weather?")
    assert "ask_agent" not in [t["function"]["name"] for t in scripted.requests[0].body.get("tools", [])]
    [result] = turn.results
    assert str(result.status) in ("denied", "error") and "ask_agent" in result.output["error"]
    assert [r for r in query(server.settings.state_dir, kind="decision") if r.action == "agent.delegate"] == []


async def test_a_python_agent_asks_a_model_agent_whose_tool_call_runs_as_its_own(
    scripted: s.ScriptedServer, agents_config: Path, start_server: Start  # noqa: F811
) -> None:
    llm_agent(agents_config, scripted.base_url, "delegation_level: 0\n")
    relay(agents_config, "a", ["llm"])
    scripted.script("fast", [s.tool_call("calculator", {"expression": "6*7"}), s.text("42 it is")])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        turn = await _converse(server, "a", "llm: what is 6*7?")
    answer = json.loads(turn.response.content)
    assert answer["status"] == "ok" and answer["output"] == {"agent": "llm", "answer": "42 it is"}
    assert scripted.requests[0].body["messages"][-1] == {"role": "user", "content": "what is 6*7?"}
    [execution] = query(server.settings.state_dir, kind="execution", tool="calculator")
    delegation = turn.actions[0]
    assert execution.agent == "llm" and execution.outcome == "ok"
    assert execution.to_dict()["details"]["delegation"] == {"action_id": delegation.action_id, "by": "a", "depth": 1}
