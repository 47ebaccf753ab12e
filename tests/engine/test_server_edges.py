"""Edges of the protocol that had no test: each drives a real server with real clients.

- resuming a session under the wrong agent is `not_found`, and the session is unharmed;
- a client-run action answered twice: the first answer counts, the second is `not_found`,
  and the connection carries on;
- a client that stops answering pings is closed with 4003;
- SIGHUP reloads at once, with polling effectively off;
- the per-session limit on tool runs makes a second call wait for the first.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from engine.client import ServerError, open_client
from engine.protocol import AgentAction, AgentResponse, AgentResult, ErrorFrame, OfferedTool, ToolCall, ToolList
from tests.engine.conftest import RunningServer

GATE = """\
name: gate
description: Waits until the file named in its argument exists (test tool).
permission_level: 0
command: [/bin/sh, -c, 'while [ ! -e "$0" ]; do sleep 0.01; done; echo opened', "{gate}"]
parameters: {{type: object}}
sandbox:
  timeout: 30s
  isolation: process
  readable_paths: ["{folder}"]
"""



async def test_resuming_with_the_wrong_agent_is_not_found(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
        async with open_client(server.url, server.token()) as client:
            with pytest.raises(ServerError) as caught:
                await client.resume_session(sid, "bookkeeper")
            assert caught.value.code == "not_found"
            assert "is not a session of agent 'bookkeeper'" in str(caught.value)
            # The right agent still resumes it, and it works.
            state = await client.resume_session(sid, "assistant")
            assert state.session_id == sid
            turn = await client.converse(sid, "what is 2*3")
            assert turn.response.content == "2*3 = 6"


async def test_a_second_client_result_is_refused_and_the_first_counts(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            where = OfferedTool(name="get_location", description="Where.", parameters={"type": "object"})
            await client.offer_tools([where])
            sid = (await client.start_session("assistant")).session_id
            await client.send_message(sid, "where am i?")
            action = await client.next_event_of(AgentAction)
            # Both results go out back to back, before the server has read either.
            await client.send_result(action.action_id, "ok", {"city": "Lisbon"}, session_id=sid)
            second = await client.send_result(action.action_id, "ok", {"city": "Atlantis"}, session_id=sid)
            error = await client.next_event_of(ErrorFrame)
            assert (error.code, error.reply_to) == ("not_found", second)
            response = await client.next_event_of(AgentResponse)
            assert response.content == "You are in Lisbon."
            # The connection is fine afterwards.
            assert (await client.converse(sid, "what is 1+1")).response.content == "1+1 = 2"


async def test_a_client_that_stops_answering_pings_is_closed_with_4003(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, ping_interval_s=0.1, ping_timeout_s=0.3, health_port=0)
    with trio.fail_after(20):
        # trio-websocket answers pings from its reader, which stops once its one-message
        # queue is full and nobody reads: the greeting tool_list fills it.
        url = f"{server.url}?token={server.token()}"
        async with trio_websocket.open_websocket_url(url, message_queue_size=0) as ws:
            async with httpx.AsyncClient() as http:
                await _wait_for_metric(http, f"{server.health_url}/metrics", "sconnect_connections 1.0")
                await _wait_for_metric(http, f"{server.health_url}/metrics", "sconnect_connections 0.0")
            # Now read: what was queued, then the close the server sent.
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 4003


async def _wait_for_metric(http: httpx.AsyncClient, url: str, line: str) -> None:
    for _ in range(400):
        if line in (await http.get(url)).text.splitlines():
            return
        await trio.sleep(0.025)
    raise AssertionError(f"{line!r} never appeared in {url}")


async def test_sighup_reloads_at_once(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, reload_interval_s=3600.0, reload_signals=(signal.SIGHUP,))
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            first = await client.next_event_of(ToolList)
            assert "echo" not in {t.name for t in first.tools}
            echo = (config_dir / "tools.d" / "calculator.yaml").read_text().replace("name: calculator", "name: echo")
            (config_dir / "tools.d" / "echo.yaml").write_text(echo)
            os.kill(os.getpid(), signal.SIGHUP)
            fresh = await client.next_event_of(ToolList)
            assert "echo" in {t.name for t in fresh.tools}


async def test_a_second_call_waits_for_the_only_tool_slot(start_server, config_dir: Path, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # Beside the state dir: a place the sandbox user can reach (pytest's tmp root is 0700).
    folder = state_dir.parent / "gate"
    folder.mkdir()
    folder.chmod(0o777)
    gate = folder / "open"
    (config_dir / "tools.d" / "gate.yaml").write_text(GATE.format(gate=gate, folder=folder))
    server: RunningServer = await start_server(config_dir, max_tool_runs_per_session=1)
    with trio.fail_after(30):
        async with open_client(server.url, server.token("root", ("admin",))) as client:
            # The slow one is decided (announced) first, so it reaches the only slot before the
            # fast one, which still has its own decision to record: sent together, either
            # could be woken first from one audit commit and take the slot.
            await client.send(ToolCall(id="slow", name="gate", arguments={}))
            assert (await client.next_event_of(AgentAction)).reply_to == "slow"
            await client.send(ToolCall(id="fast", name="calculator", arguments={"expression": "1+1"}))
            assert (await client.next_event_of(AgentAction)).reply_to == "fast"
            gate.touch()
            first = await client.next_event_of(AgentResult)
            second = await client.next_event_of(AgentResult)
            assert (first.reply_to, second.reply_to) == ("slow", "fast")
            assert str(second.status) == "ok" and second.output["result"] == 2
