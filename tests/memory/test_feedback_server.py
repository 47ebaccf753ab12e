"""Learning from feedback through a real server, real WebSocket clients and the scripted
OpenAI-compatible server.

What each test does:
- rates a turn (the shipped assistant, rules model): recorded, replaced by a second
  rating, audited with its comment, counted in metrics;
- refuses feedback for another subject's turn (``forbidden``), an unknown turn
  (``not_found``), a rating that is not 1 or -1 and a comment with control characters;
- routes ``routing: feedback`` by Thompson sampling: after model a's answers are rated
  bad and b's good, most of the next turns go to b, the same choices under the same seed;
- gives well-rated turns to the model as examples, from the same subject only unless
  ``examples_scope: agent``;
- ``sconnect feedback report`` (a real subprocess on the server's state) counts ratings per
  agent, model and tool, and exits 2 without a state database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from engine.audit import query
from engine.auth import AuthSettings
from engine.client import Client, ServerError, open_client
from engine.protocol import ErrorFrame, Feedback, FeedbackRecorded, new_id
from engine.server import ServerSettings, serve
from tests.conftest import copy_shipped
from tests.engine.conftest import SECRET, RunningServer, copy_example_config
from tests.models import scripted as s
from tests.models.conftest import model_file
from tests.security.cliserver import sconnect

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def metric(server: RunningServer, line_start: str) -> float:
    assert server.health_url is not None
    async with httpx.AsyncClient() as client:
        text = (await client.get(server.health_url + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


async def rate(client: Client, turn_id: str, rating: int, comment: str | None = None) -> FeedbackRecorded:
    reply = await client.request(Feedback(id=new_id(), turn_id=turn_id, rating=rating, comment=comment))
    assert isinstance(reply, FeedbackRecorded)
    return reply


async def test_a_rating_is_recorded_replaced_audited_and_counted(
    config_dir: Path, start_server: Callable[..., object]
) -> None:
    server: RunningServer = await start_server(config_dir, health_port=0)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("assistant")).session_id
            turn = await alice.converse(sid, "what is 6*7")
            first = await rate(alice, turn.response.turn_id, -1, "wrong, I meant 6*8")
            assert (first.rating, first.replaced) == (-1, False)
            second = await rate(alice, turn.response.turn_id, 1)
            assert (second.rating, second.replaced) == (1, True)
    counted = 'sconnect_feedback_total{agent="assistant",model="assistant/inline",rating="%s"}'
    assert await metric(server, counted % "bad") == 1 and await metric(server, counted % "good") == 1
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="feedback"))
    assert [(r.subject, r.target, r.outcome, json.loads(r.details).get("comment")) for r in records] == [
        ("alice", turn.response.turn_id, "bad", "wrong, I meant 6*8"), ("alice", turn.response.turn_id, "good", None)]


async def test_feedback_that_is_not_yours_or_not_a_turn_is_refused(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            sid = (await alice.start_session("assistant")).session_id
            turn_id = (await alice.converse(sid, "what is 1+1")).response.turn_id
            with pytest.raises(ServerError) as caught:
                await bob.request(Feedback(id=new_id(), turn_id=turn_id, rating=-1))
            assert caught.value.code == "forbidden"
            with pytest.raises(ServerError) as caught:
                await alice.request(Feedback(id=new_id(), turn_id="no-such-turn", rating=1))
            assert caught.value.code == "not_found"
            with pytest.raises(ServerError) as caught:
                await alice.request(Feedback(id=new_id(), turn_id=turn_id, rating=1, comment="bad\x00byte"))
            assert caught.value.code == "invalid_arguments"
            for rating in ("0", "5", '"good"', "true", "1.5"):
                frame_id = new_id()
                await alice.send_raw(
                    f'{{"type":"feedback","id":"{frame_id}","payload":{{"turn_id":"{turn_id}","rating":{rating}}}}}')
                error = await alice.next_event_of(ErrorFrame)
                assert error.code == "invalid_message" and error.reply_to == frame_id, rating
            # None of it was recorded: the first real rating replaces nothing.
            assert not (await rate(alice, turn_id, 1)).replaced


def _two_models(config_dir: Path, base_url: str, agent_extra: str) -> None:
    copy_shipped("models.d", config_dir / "models.d")
    for name in ("alpha", "beta"):
        (config_dir / "models.d" / f"{name}.yaml").write_text(model_file(name, base_url))
    (config_dir / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: Routed by ratings (test).\nmodels: [alpha, beta]\nrouting: feedback\n"
        + agent_extra)


async def _learn_and_count(server: RunningServer, scripted: s.ScriptedServer) -> list[str]:
    """Rate 30 turns (alpha's bad, beta's good), then say which model took each of 30 more."""
    later: list[str] = []
    async with open_client(server.url, server.token("alice")) as alice:
        sid = (await alice.start_session("llm")).session_id
        for _ in range(30):
            turn = await alice.converse(sid, "hi")
            await rate(alice, turn.response.turn_id, 1 if turn.response.content == "from beta" else -1)
        for _ in range(30):
            later.append((await alice.converse(sid, "hi")).response.content.removeprefix("from "))
    return later


@pytest.mark.slow
async def test_feedback_routing_moves_turns_to_the_well_rated_model_repeatably(
    scripted: s.ScriptedServer, config_dir: Path, tmp_path: Path, start_server: Callable[..., object],
    nursery: trio.Nursery,
) -> None:
    _two_models(config_dir, scripted.base_url, "feedback_routing: {exploration: 0.1, seed: 7}\n")
    scripted.script("alpha", [s.text("from alpha")])
    scripted.script("beta", [s.text("from beta")])
    server: RunningServer = await start_server(config_dir, health_port=0)  # type: ignore[operator]
    with trio.fail_after(120):
        later = await _learn_and_count(server, scripted)
    assert later.count("beta") >= 24, later
    # Every turn is counted with how its model was chosen.
    sampled = await metric(server, 'sconnect_model_choices_total{agent="llm",model="beta",how="sampled"}')
    explored = await metric(server, 'sconnect_model_choices_total{agent="llm"')
    assert explored == 60 and sampled >= 20

    # The same seed, the same history: the same choices, on a second server with its own state.
    again = copy_example_config(tmp_path / "again")
    _two_models(again, scripted.base_url, "feedback_routing: {exploration: 0.1, seed: 7}\n")
    settings = ServerSettings(config_dir=again, state_dir=tmp_path / "again-state", auth=AuthSettings(secret=SECRET),
                              port=0)
    handle = await nursery.start(serve, settings)
    second = RunningServer(handle.websocket, settings)
    with trio.fail_after(120):
        assert await _learn_and_count(second, scripted) == later


async def test_rated_turns_become_examples_for_the_same_subject_only(
    scripted: s.ScriptedServer, config_dir: Path, start_server: Callable[..., object]
) -> None:
    copy_shipped("models.d", config_dir / "models.d")
    (config_dir / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (config_dir / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: Learns from examples (test).\nmodel: fast\nexamples_from_feedback: 2\n")
    scripted.script("fast", [s.text("Paris, of course."), s.text("Nope."), s.text("Lyon."), s.text("Marseille.")])
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            sid = (await alice.start_session("llm")).session_id
            good = await alice.converse(sid, "capital of France?")
            bad = await alice.converse(sid, "capital of Spain?")
            await rate(alice, good.response.turn_id, 1)
            await rate(alice, bad.response.turn_id, -1)
            fresh = (await alice.start_session("llm")).session_id
            await alice.converse(fresh, "a city in France?")
            theirs = (await bob.start_session("llm")).session_id
            await bob.converse(theirs, "a city in France?")
    _good, _bad, alices, bobs = [r.body["messages"] for r in scripted.seen("fast")]
    [example] = [m["content"] for m in alices if m["role"] == "system"]
    assert "User: capital of France?\nYou: Paris, of course." in example and "Spain" not in example
    assert not any(m["role"] == "system" for m in bobs)


@pytest.mark.slow
async def test_feedback_report_counts_per_agent_model_and_tool(
    config_dir: Path, start_server: Callable[..., object]
) -> None:
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            sid = (await alice.start_session("assistant")).session_id
            for question, rating in [("what is 2*3", 1), ("what is 4*5", -1), ("hello", 1)]:
                turn = await alice.converse(sid, question)
                await rate(alice, turn.response.turn_id, rating)
            await alice.converse(sid, "what is 1+1")  # answered, never rated
    state = str(server.settings.state_dir)
    done = await sconnect("feedback", "report", "--state-dir", state, "--json")
    assert done.code == 0, done.stderr
    rows = {(row["by"], row["name"]): row for row in json.loads(done.stdout)}
    assert (rows["agent", "assistant"]["rated"], rows["agent", "assistant"]["good"]) == (3, 2)
    model = rows["model", "assistant/inline"]
    assert (model["rated"], model["bad"], model["turns"]) == (3, 1, 4)
    assert (rows["tool", "calculator"]["good"], rows["tool", "calculator"]["bad"]) == (1, 1)
    assert rows["tool", "calculator"]["good_rate"] == 0.5
    table = await sconnect("feedback", "report", "--state-dir", state, "--agent", "assistant")
    assert table.code == 0 and "calculator" in table.stdout and "67%" in table.stdout, table.stdout
    missing = await sconnect("feedback", "report", "--state-dir", state + "-nowhere")
    assert missing.code == 2 and "no state database" in missing.stderr


async def test_examples_scope_agent_shares_rated_turns_between_subjects(
    scripted: s.ScriptedServer, config_dir: Path, start_server: Callable[..., object]
) -> None:
    copy_shipped("models.d", config_dir / "models.d")
    (config_dir / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (config_dir / "agents.d" / "llm.yaml").write_text(
        "name: llm\ndescription: Shares examples (test).\nmodel: fast\nexamples_from_feedback: 1\n"
        "examples_scope: agent\n")
    scripted.script("fast", [s.text("Paris."), s.text("Lyon.")])
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("bob")) as bob:
            sid = (await alice.start_session("llm")).session_id
            await rate(alice, (await alice.converse(sid, "capital of France?")).response.turn_id, 1)
            theirs = (await bob.start_session("llm")).session_id
            await bob.converse(theirs, "a city in France?")
    [example] = [m["content"] for m in scripted.seen("fast")[1].body["messages"] if m["role"] == "system"]
    assert "User: capital of France?\nYou: Paris." in example
