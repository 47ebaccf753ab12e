"""Named models, retries and ``routing: first`` through a real server and WebSocket clients.

Each test runs a scripted OpenAI-compatible server on 127.0.0.1 (tests/models/scripted.py),
points models.d/ files at it, and talks to a real ``sconnect`` server as a client would.
Assertions are on what the scripted server saw (how many requests, for which model, in
which order) and on the frames the client got, never on wall time.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from engine.client import open_client
from tests.engine.conftest import RunningServer
from tests.models import scripted as s
from tests.models.conftest import agent_file, model_file

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound then closed: connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def metric(server: RunningServer, line_start: str) -> float:
    assert server.health_url is not None
    async with httpx.AsyncClient() as client:
        text = (await client.get(server.health_url + "/metrics")).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


async def test_a_named_model_answers_and_metrics_name_it(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    scripted.script("fast", [s.text("Hello from the fast model")])
    server: RunningServer = await start_server(llm_config, health_port=0)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
    assert turn.response.content == "Hello from the fast model"
    assert len(turn.tokens) == 5
    [seen] = scripted.seen()
    assert seen.model == "fast" and seen.body["stream"] is True
    assert seen.body["messages"][-1] == {"role": "user", "content": "hi"}
    assert [t["function"]["name"] for t in seen.body["tools"]] == ["calculator"]
    assert await metric(server, 'sconnect_model_steps_total{model="fast",outcome="served"}') == 1


async def test_429_with_retry_after_then_success(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    # Retry-After says 30 s; retry_max_wait (10ms) caps it, so the test does not wait.
    scripted.script("fast", [s.status(429, Retry_After="30"), s.status(503), s.text("third time lucky")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
    assert turn.response.content == "third time lucky"
    assert [r.model for r in scripted.requests] == ["fast", "fast", "fast"]
    # The same request each time.
    assert len({json.dumps(r.body, sort_keys=True) for r in scripted.requests}) == 1


async def test_retries_run_out_and_the_turn_says_so(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "fast.yaml").write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    scripted.script("fast", [s.status(500), s.status(502), s.status(429), s.text("too late")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
            assert turn.response.content.startswith("The model failed: HTTP 429")
            # A 4xx other than 408/429 is not retried; the session goes on.
            scripted.script("fast", [s.status(400), s.text("never asked")])
            again = await client.converse(sid, "hi again")
    assert again.response.content.startswith("The model failed: HTTP 400")
    assert len(scripted.seen("fast")) == 3 + 1


async def test_first_routing_falls_back_when_a_is_down(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "a.yaml").write_text(model_file("a", closed_port_url()))
    (llm_config / "models.d" / "b.yaml").write_text(model_file("b", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("models: [a, b]\nrouting: first"))
    scripted.script("b", [s.tool_call("calculator", {"expression": "6*7"}), s.text("It is 42.")])
    server: RunningServer = await start_server(llm_config, health_port=0)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "what is 6*7")
    assert turn.response.content == "It is 42."
    [result] = turn.results
    assert str(result.status) == "ok" and result.output["result"] == 42
    # b served both steps of the turn; a was tried once (then b was preferred for the turn).
    assert [r.model for r in scripted.requests] == ["b", "b"]
    assert await metric(server, 'sconnect_model_steps_total{model="a",outcome="fell_back"}') == 1
    assert await metric(server, 'sconnect_model_steps_total{model="b",outcome="served"}') == 2


async def test_first_routing_falls_back_on_5xx_and_garbage_in_order(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    for name in ("a", "b", "c"):
        (llm_config / "models.d" / f"{name}.yaml").write_text(model_file(name, scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("models: [a, b, c]"))
    scripted.script("a", [s.status(500)])  # 500 on every attempt: 1 + 2 retries
    scripted.script("b", [s.garbage()])  # a malformed stream is not retried, and moves on
    scripted.script("c", [s.text("c answers")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
    assert turn.response.content == "c answers"
    assert [r.model for r in scripted.requests] == ["a", "a", "a", "b", "c"]


async def test_every_model_failing_names_each(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "a.yaml").write_text(model_file("a", closed_port_url(), extra="retries: 0\n"
                                                               ).replace("retries: 2\n", ""))
    (llm_config / "models.d" / "b.yaml").write_text(model_file("b", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("models: [a, b]"))
    scripted.script("b", [s.garbage()])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
            content = turn.response.content
            assert content.startswith("The model failed: every model failed: a: cannot connect to")
            assert "; b: the stream carried data that is not JSON" in content
            # The session is still usable.
            scripted.script("b", [s.text("back")])
            assert (await client.converse(sid, "hi")).response.content == "back"


async def test_stream_false_asks_for_a_whole_answer(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    (llm_config / "models.d" / "whole.yaml").write_text(model_file("whole", scripted.base_url, extra="stream: false\n"))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: whole"))
    scripted.script("whole", [s.tool_call("calculator", {"expression": "2+2"}), s.text("Four.")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "2+2?")
    assert turn.response.content == "Four."
    assert turn.results[0].output["result"] == 4
    assert [r.body["stream"] for r in scripted.requests] == [False, False]


async def test_the_shipped_agents_still_run_offline_beside_models_d(
    llm_config: Path, start_server: Callable[..., object]
) -> None:
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "what is 17*23")
    assert turn.response.content == "17*23 = 391"


async def test_a_slow_model_times_out_and_the_next_one_answers(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    slow = model_file("slow", scripted.base_url).replace("timeout: 5s\n", "timeout: 300ms\n")
    (llm_config / "models.d" / "slow.yaml").write_text(slow)
    (llm_config / "models.d" / "b.yaml").write_text(model_file("b", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("models: [slow, b]"))
    scripted.script("slow", [s.hang()])
    scripted.script("b", [s.text("b was quicker")])
    server: RunningServer = await start_server(llm_config)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("llm")).session_id
            turn = await client.converse(sid, "hi")
    assert turn.response.content == "b was quicker"
    # A slow answer is not retried (asking again would not make it faster): one request each.
    assert [r.model for r in scripted.requests] == ["slow", "b"]


async def test_a_changed_model_file_is_used_from_the_next_turn(
    scripted: s.ScriptedServer, llm_config: Path, start_server: Callable[..., object]
) -> None:
    from engine.protocol import ToolList

    path = llm_config / "models.d" / "fast.yaml"
    path.write_text(model_file("fast", scripted.base_url))
    (llm_config / "agents.d" / "llm.yaml").write_text(agent_file("model: fast"))
    scripted.script("fast", [s.text("from fast")])
    scripted.script("bigger", [s.text("from bigger")])
    server: RunningServer = await start_server(llm_config, reload_interval_s=0.1)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            await client.next_event_of(ToolList)
            sid = (await client.start_session("llm")).session_id
            assert (await client.converse(sid, "hi")).response.content == "from fast"
            # Same name, another model behind it: a reload (announced by a fresh tool_list) takes it.
            path.write_text(model_file("fast", scripted.base_url).replace("model: fast\n", "model: bigger\n"))
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
            await client.next_event_of(ToolList)
            assert (await client.converse(sid, "hi")).response.content == "from bigger"
    assert [r.model for r in scripted.requests] == ["fast", "bigger"]
