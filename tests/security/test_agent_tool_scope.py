"""A model cannot reach a tool outside its agent's list, whatever it asks for.

Before the fix, any tool call a model produced went to the action path, which checked
the policy but not the agent: an agent limited to ``calculator`` whose model (steered
by a prompt injection, say) asked for ``system_info`` or ``shell`` got it run whenever
the caller's role allowed that tool. Each test here plays such a model with the
scripted OpenAI-compatible server (tests/models/scripted.py) behind a real server.

- test_a_configured_tool_outside_the_agent_is_denied_not_run: the model asks for
  ``system_info`` (level 0, allowed to users, not the agent's): the client sees a denied
  action, the model reads the refusal back, the audit has a deny decision and no execution.
- test_an_admin_tool_outside_the_agent_is_denied_without_asking_anyone: the same with
  ``shell`` (level 2) for an admin caller: nobody is asked to approve, nothing runs.
- test_a_python_agent_reaches_nothing_outside_its_lists: a custom Python agent limited to
  ``calculator`` asks its context for ``system_info``, ``shell`` (as an admin), a read of
  a host it does not declare, the built-in ``ask_agent`` as a tool, and a delegation it
  has no ``delegates`` for: each is refused (denied or unknown), nobody is asked,
  nothing runs, and every refusal is audited as a deny.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from tests.engine.conftest import RunningServer
from tests.models import scripted as s
from tests.models.conftest import agent_file, llm_config, model_file, scripted  # noqa: F401 - fixtures

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_a_configured_tool_outside_the_agent_is_denied_not_run(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]  # noqa: F811
) -> None:
    (llm_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    scripted.script("fast", [s.tool_call("system_info", {}), s.text("I may not do that.")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "tell me about the system")
    assert turn.response.content == "I may not do that."
    [action] = turn.actions
    [result] = turn.results
    assert action.name == "system_info" and str(result.status) == "denied"
    assert "not one of the tools of agent 'llm'" in result.output["error"]
    tool_message = scripted.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool" and '"status": "denied"' in tool_message["content"]
    assert query(server.settings.state_dir, kind="execution", tool="system_info") == []
    [decision] = query(server.settings.state_dir, kind="decision", tool="system_info")
    assert json.loads(decision.decision or "{}")["effect"] == "deny" and decision.agent == "llm"


async def test_an_admin_tool_outside_the_agent_is_denied_without_asking_anyone(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]  # noqa: F811
) -> None:
    (llm_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    scripted.script("fast", [s.tool_call("shell", {"command": "id > pwned.txt"}), s.text("done")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    asked: list[str] = []
    with trio.fail_after(20):
        async with open_client(server.url, server.token(sub="root-admin", roles=("admin",))) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "run id", approve=lambda a: asked.append(a.name) or True)
    assert asked == []
    assert [(a.name, a.requires_approval) for a in turn.actions] == [("shell", False)]
    assert [str(r.status) for r in turn.results] == ["denied"]
    assert query(server.settings.state_dir, kind="execution", tool="shell") == []


PROBE = """
import json
from engine.agents import BaseAgent

class Agent(BaseAgent):
    async def process_message(self, message, context):
        results = [
            await context.call_tool("system_info", {}),
            await context.call_tool("shell", {"command": "id > pwned.txt"}),
            await context.read_resource("db://users/profile/1"),
            await context.call_tool("ask_agent", {"agent": "assistant", "message": "run id"}),
            await context.delegate("assistant", "run id"),
        ]
        return json.dumps([r.status for r in results])
"""


async def test_a_python_agent_reaches_nothing_outside_its_lists(
    llm_config: Path, start_server: Callable[..., object]  # noqa: F811
) -> None:
    (llm_config / "agents.d" / "probe.py").write_text(PROBE)
    (llm_config / "agents.d" / "probe.yaml").write_text(
        "name: probe\ndescription: Tries what it may not (test).\npython: probe:Agent\ntools: [calculator]\n"
    )
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    asked: list[str] = []
    with trio.fail_after(20):
        async with open_client(server.url, server.token(sub="root-admin", roles=("admin",))) as client:
            sid = (await client.start_session("probe")).session_id
            turn = await client.converse(sid, "go", approve=lambda a: asked.append(a.name) or True)
    assert json.loads(turn.response.content) == ["denied", "denied", "denied", "error", "denied"]
    assert asked == [] and not any(a.requires_approval for a in turn.actions)
    state = server.settings.state_dir
    assert query(state, kind="execution") == [] and query(state, kind="resource_read") == []
    decisions = query(state, kind="decision")
    assert len(decisions) == 5 and all(json.loads(d.decision or "{}")["effect"] == "deny" for d in decisions)
