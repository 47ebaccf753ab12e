"""The session board: the agents of one session leave notes for each other, under policy and audit.

- test_a_delegated_agent_reads_what_the_asking_agent_left: a (``board: post``) posts a
  note, then asks b (``board: read``), which finds it: one board per session, shared
  by the agents it delegates to; each read and post is an action, audited.
- test_what_an_agent_may_do_on_the_board_is_its_files_to_say: ``board: none`` cannot
  read, ``board: read`` cannot post (denied, audited, nothing changes), and a note
  that is not 1-4000 characters of text is refused.
- test_without_a_policy_rule_the_board_is_closed: the shipped ``session-board`` rule
  removed, reads and posts are denied by default.
- test_a_model_uses_the_board_through_its_builtin_tools: a scripted model is offered
  ``read_board`` and ``post_to_board`` and uses both.
- test_boards_are_per_session: another session of the same user starts empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.server.board import MAX_NOTE_CHARS
from tests.agents.conftest import add_agent
from tests.engine.conftest import RunningServer
from tests.models import scripted as s
from tests.models.conftest import model_file, scripted  # noqa: F401 - fixture

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
Start = Callable[..., object]

NOTER = """
import json
from engine.agents import BaseAgent

class Agent(BaseAgent):
    async def process_message(self, message, context):
        verb, _, rest = message.partition(" ")
        if verb == "post":
            result = await context.post_to_board(rest)
        elif verb == "read":
            result = await context.read_board()
        else:
            await context.post_to_board("todo: " + rest)
            result = await context.delegate("b", "read")
        return json.dumps({"status": result.status, "output": result.output, "reason": result.reason})
"""


def noter(root: Path, name: str, board: str, extra: str = "") -> None:
    delegates = "delegates: [b]\n" if name == "a" else ""
    add_agent(root, name, NOTER, f"board: {board}\n{delegates}delegation_level: 0\n{extra}")


async def _say(client, sid: str, message: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return json.loads((await client.converse(sid, message)).response.content)  # type: ignore[no-any-return]


async def test_a_delegated_agent_reads_what_the_asking_agent_left(agents_config: Path, start_server: Start) -> None:
    noter(agents_config, "a", "post")
    noter(agents_config, "b", "read")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("a")).session_id
            answer = await _say(client, sid, "leave check the weather")
    assert answer["status"] == "ok"
    inner = json.loads(answer["output"]["answer"])
    assert inner["status"] == "ok"
    [note] = inner["output"]["notes"]
    assert (note["seq"], note["agent"], note["text"]) == (1, "a", "todo: check the weather")
    state = server.settings.state_dir
    [post] = [r for r in query(state, kind="execution") if r.action == "board.append"]
    [read] = query(state, kind="resource_read", tool="board://session")
    assert (post.agent, post.outcome, read.agent, read.outcome) == ("a", "ok", "b", "ok")
    assert read.to_dict()["details"]["delegation"]["by"] == "a"


async def test_what_an_agent_may_do_on_the_board_is_its_files_to_say(agents_config: Path, start_server: Start) -> None:
    noter(agents_config, "a", "none")
    noter(agents_config, "b", "read")
    noter(agents_config, "c", "post")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            off = (await client.start_session("a")).session_id
            read_only = (await client.start_session("b")).session_id
            poster = (await client.start_session("c")).session_id
            refused_read = await _say(client, off, "read")
            refused_post = await _say(client, read_only, "post hello")
            too_long = await _say(client, poster, "post " + "x" * (MAX_NOTE_CHARS + 1))
            still_empty = await _say(client, read_only, "read")
    assert refused_read["status"] == "denied"
    assert refused_read["reason"] == "agent 'a' may not use the session board (board: none)"
    assert refused_post["status"] == "denied"
    assert refused_post["reason"] == "agent 'b' may not post to the session board (board: read)"
    assert too_long["status"] == "error" and too_long["reason"] == "a note is text of 1 to 4000 characters"
    assert still_empty["status"] == "ok" and still_empty["output"]["notes"] == []
    assert [r for r in query(server.settings.state_dir, kind="execution") if r.action == "board.append"] == []


async def test_without_a_policy_rule_the_board_is_closed(agents_config: Path, start_server: Start) -> None:
    policy = agents_config / "policies" / "default.yaml"
    text = policy.read_text()
    start = text.index("  - id: session-board")
    policy.write_text(text[:start] + text[text.index("  - id: read-example-resources"):])
    noter(agents_config, "c", "post")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("c")).session_id
            posted = await _say(client, sid, "post hello")
            read = await _say(client, sid, "read")
    assert posted["status"] == "denied" and "denied by default" in posted["reason"]
    assert read["status"] == "denied" and "denied by default" in read["reason"]


async def test_boards_are_per_session(agents_config: Path, start_server: Start) -> None:
    noter(agents_config, "c", "post")
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            first = (await client.start_session("c")).session_id
            second = (await client.start_session("c")).session_id
            assert (await _say(client, first, "post mine"))["status"] == "ok"
            assert (await _say(client, second, "read"))["output"]["notes"] == []
            assert [n["text"] for n in (await _say(client, first, "read"))["output"]["notes"]] == ["mine"]


async def test_a_model_uses_the_board_through_its_builtin_tools(
    scripted: s.ScriptedServer, agents_config: Path, start_server: Start  # noqa: F811
) -> None:
    (agents_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (agents_config / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: A scripted model agent (test).\nmodel: fast\nboard: post\n")
    scripted.script("fast", [s.tool_call("post_to_board", {"text": "remember the milk"}),
                             s.tool_call("read_board", {}), s.text("noted")])
    server: RunningServer = await start_server(agents_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "remember the milk")
    offered = [t["function"]["name"] for t in scripted.requests[0].body["tools"]]
    assert offered == ["read_board", "post_to_board"]
    assert turn.response.content == "noted"
    assert [(a.name, str(r.status)) for a, r in zip(turn.actions, turn.results, strict=True)] == [
        ("post_to_board", "ok"), ("board://session", "ok")]
    read_back = json.loads(scripted.requests[2].body["messages"][-1]["content"])
    assert [n["text"] for n in read_back["output"]["notes"]] == ["remember the milk"]
