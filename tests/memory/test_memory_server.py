"""Memory across sessions through a real server and real WebSocket clients, on the shipped
configuration (the assistant on the rules model, memory on, the memory://memory host).

What each test does:
- remembers a fact in one session and recalls it in a later one, while another subject
  reads nothing of it (through the agent and by reading the resource directly);
- lists and deletes memories with the protocol frames; another subject's id is
  ``not_found`` and deletes nothing; both are audited;
- writes past the agent's bounds (count and size): ``limit_exceeded``, nothing stored;
- calls ``remember`` directly (no agent): refused as an error, nothing stored;
- gives the memories to an OpenAI-compatible model (the scripted server) as a system
  message, and only the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import ServerError, open_client
from engine.protocol import AgentResult, MemoryForget, MemoryList, MemoryListRequest, new_id
from tests.conftest import copy_shipped
from tests.engine.conftest import RunningServer
from tests.models import scripted as s
from tests.models.conftest import model_file

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def _bounded(config_dir: Path, limits: str) -> None:
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text()
    start = text.index("memory:\n")
    end = text.index("  retention: 365d\n") + len("  retention: 365d\n")
    assistant.write_text(text[:start] + f"memory: {limits}\n" + text[end:])


async def test_a_fact_remembered_in_one_session_is_recalled_in_the_next_and_by_nobody_else(
    server: RunningServer,
) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("assistant")).session_id
            turn = await alice.converse(sid, "remember that I take my tea green")
            assert [a.name for a in turn.actions] == ["remember"]
            assert [str(r.status) for r in turn.results] == ["ok"]
            assert turn.response.content == "I will remember that: I take my tea green"
            await alice.control(sid, "stop")
            later = (await alice.start_session("assistant")).session_id
            recalled = await alice.converse(later, "what do you remember about me?")
            assert "I take my tea green" in recalled.response.content
            assert [a.name for a in recalled.actions] == ["memory://memory"]
        async with open_client(server.url, server.token("bob")) as bob:
            sid = (await bob.start_session("assistant")).session_id
            turn = await bob.converse(sid, "what do you remember about me?")
            assert "tea" not in turn.response.content and "(nothing remembered)" in turn.response.content
            direct = await bob.read_resource("memory://memory")
            assert direct.content == "(nothing remembered)"


async def test_list_and_forget_are_the_callers_own(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            sid = (await alice.start_session("assistant")).session_id
            await alice.converse(sid, "remember that my desk is on floor 3")
            await alice.converse(sid, "remember my badge is blue")
            listed = await alice.request(MemoryListRequest(id=new_id()))
            assert isinstance(listed, MemoryList)
            assert [(m.agent, m.content) for m in listed.memories] == [
                ("assistant", "my desk is on floor 3"), ("assistant", "my badge is blue")]
            first = listed.memories[0].memory_id
            # Bob sees nothing, cannot read, delete or name alice's memory.
            assert (await bob.request(MemoryListRequest(id=new_id()))).memories == ()  # type: ignore[union-attr]
            with pytest.raises(ServerError) as caught:
                await bob.request(MemoryForget(id=new_id(), memory_id=first))
            assert caught.value.code == "not_found"
            with pytest.raises(ServerError) as caught:
                await bob.read_resource(f"memory://memory/{first}")
            assert caught.value.code == "not_found"
            assert (await bob.request(MemoryForget(id=new_id(), all=True))).forgotten == 0  # type: ignore[union-attr]
            assert (await alice.read_resource(f"memory://memory/{first}")).content == "my desk is on floor 3"
            # The agent forgets one by id (the forget tool), the user the rest.
            turn = await alice.converse(sid, f"forget {first}")
            assert [str(r.status) for r in turn.results] == ["ok"]
            gone = await alice.request(MemoryForget(id=new_id(), all=True, agent="assistant"))
            assert gone.forgotten == 1  # type: ignore[union-attr]
            assert (await alice.request(MemoryListRequest(id=new_id()))).memories == ()  # type: ignore[union-attr]
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="memory"))
    assert [(r.subject, r.action, r.outcome) for r in records if r.action == "memory.forget"] == [
        ("bob", "memory.forget", "ok"), ("alice", "memory.forget", "ok")]


async def test_writes_past_the_bounds_are_refused(
    config_dir: Path, start_server: Callable[..., object]
) -> None:
    _bounded(config_dir, "{max_items: 2, max_item_size: 24B}")
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("assistant")).session_id
            for fact in ("one fact", "two facts"):
                assert [str(r.status) for r in (await alice.converse(sid, f"remember {fact}")).results] == ["ok"]
            full = await alice.converse(sid, "remember three facts")
            assert [str(r.status) for r in full.results] == ["limit_exceeded"]
            assert "the most allowed (2)" in full.results[0].output["error"]
            await alice.request(MemoryForget(id=new_id(), all=True))
            long = await alice.converse(sid, "remember " + "x" * 25)
            assert [str(r.status) for r in long.results] == ["limit_exceeded"]
            assert "more than this agent keeps (24 bytes)" in long.results[0].output["error"]
            assert (await alice.request(MemoryListRequest(id=new_id()))).memories == ()  # type: ignore[union-attr]


async def test_remember_without_an_agent_is_refused(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            result = await alice.call_tool("remember", {"fact": "sneaky"})
            assert isinstance(result, AgentResult) and str(result.status) == "error"
            assert "needs an agent session" in result.output["error"]
            assert (await alice.request(MemoryListRequest(id=new_id()))).memories == ()  # type: ignore[union-attr]


async def test_memories_are_given_to_the_model_of_their_subject_only(
    scripted: s.ScriptedServer, config_dir: Path, start_server: Callable[..., object]
) -> None:
    copy_shipped("models.d", config_dir / "models.d")
    (config_dir / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (config_dir / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: Remembers (test).\nmodel: fast\ntools: [remember]\n"
        "resources: [memory://memory]\nmemory: {recall: 5}\n")
    scripted.script("fast", [s.tool_call("remember", {"fact": "Alice is vegetarian"}), s.text("Noted."),
                             s.text("Enjoy your meal.")])
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("llm")).session_id
            await alice.converse(sid, "I am vegetarian")
            later = (await alice.start_session("llm")).session_id
            await alice.converse(later, "what should I eat?")
        async with open_client(server.url, server.token("bob")) as bob:
            sid = (await bob.start_session("llm")).session_id
            await bob.converse(sid, "what should I eat?")
    first, _after_tool, alices, bobs = [r.body["messages"] for r in scripted.seen("fast")]
    assert not any("remember about this user" in str(m.get("content")) for m in first)
    [memory] = [m for m in alices if m["role"] == "system"]
    assert "Alice is vegetarian" in memory["content"] and alices[-1]["content"] == "what should I eat?"
    assert not any(m["role"] == "system" for m in bobs)
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, tool="memory://memory"))
    # Only the turn that had something to recall read (and recorded) it.
    assert [(r.subject, r.outcome, json.loads(r.details)["recall"]) for r in records] == [("alice", "ok", 1)]
