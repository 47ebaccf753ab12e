"""``sconnect mcp stdio``: the SDK's client launches the bridge, which talks to a real server over WebSocket.

One engine, one audit chain: the bridged calls are decided, approved, sandboxed and
audited by the server, with transport ``mcp-stdio``, the MCP request id and the client's
name in the records' details.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction
from tests.conftest import REPO, processes_with
from tests.engine.conftest import SLEEPER
from tests.mcp.conftest import McpServer, wait_until

# Each test launches the bridge, which imports the MCP SDK (seconds on a loaded machine).
pytestmark = pytest.mark.slow

ECHO2 = """\
name: echo2
description: Echo the text back (level 2, test tool).
permission_level: 2
command: [/bin/cat]
parameters:
  type: object
  properties: {text: {type: string}}
  required: [text]
sandbox: {timeout: 5s, isolation: process}
"""


@asynccontextmanager
async def bridged(server: McpServer, token: str | None, *extra: str, **options: Any) -> AsyncIterator[Any]:
    import mcp_types
    from mcp import Client, StdioServerParameters

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if token is not None:
        env["SCONNECT_TOKEN"] = token
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "engine", "mcp", "stdio", "--url", server.url, *extra], env=env, cwd=REPO,
    )
    async with Client(params, mode="legacy", client_info=mcp_types.Implementation(name="desk", version="1"),
                      **options) as client:
        yield client


async def test_tools_are_listed_and_called_through_the_bridge(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(config_dir, mcp_port=None)
    with trio.fail_after(60):
        async with bridged(server, server.token()) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "calculator" in names and "send_payment" not in names
            result = await client.call_tool("calculator", {"expression": "7*6"})
            assert not result.is_error and result.structured_content["result"] == 42
            from mcp.shared.exceptions import MCPError

            with pytest.raises(MCPError) as bad:
                await client.call_tool("calculator", {"expression": 7})
            assert bad.value.error.code == -32602 and bad.value.error.data["problems"]
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("no_such_tool", {})
            assert hidden.value.error.message == "Unknown tool: no_such_tool"
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert "db://users/profile/{id}" in templates
            document = await client.read_resource("file://local/documents/welcome.md")
            assert document.contents[0].text
            with pytest.raises(MCPError) as missing:
                await client.read_resource("file://local/documents/nope.md")
            assert missing.value.error.code == -32602
    [execution] = query(server.settings.state_dir, kind="execution", tool="calculator")
    details = execution.to_dict()["details"]
    assert (details["transport"], details["mcp_client"]) == ("mcp-stdio", "desk") and details["mcp_request_id"]
    assert execution.subject == "alice"


async def test_level_2_through_the_bridge_is_approved_by_a_websocket_admin(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "echo2.yaml").write_text(ECHO2)
    server: McpServer = await start_mcp(config_dir, mcp_port=None)
    with trio.fail_after(60):
        async with open_client(server.url, server.token("boss", ("admin",))) as admin, \
                bridged(server, server.token()) as client:
            async with trio.open_nursery() as nursery:

                async def approve() -> None:
                    async for frame in admin.events():
                        if isinstance(frame, AgentAction) and frame.name == "echo2":
                            await admin.answer(frame.action_id, True)
                            return

                nursery.start_soon(approve)
                result = await client.call_tool("echo2", {"text": "bridged"})
    assert not result.is_error and result.structured_content == {"text": "bridged"}
    [approval] = query(server.settings.state_dir, kind="approval", tool="echo2")
    assert approval.approver == "boss" and approval.to_dict()["details"]["transport"] == "mcp-stdio"


async def test_cancelling_a_bridged_call_kills_its_sandbox(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    marker = f"1735.{os.getpid():08d}"
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    server: McpServer = await start_mcp(config_dir, mcp_port=None)
    with trio.fail_after(60):
        async with bridged(server, server.token()) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "sleeper", {})
                await wait_until(lambda: processes_with(marker))
                nursery.cancel_scope.cancel()
            await wait_until(lambda: not processes_with(marker))
            assert not (await client.call_tool("calculator", {"expression": "1+1"})).is_error
        await wait_until(lambda: query(server.settings.state_dir, kind="execution", tool="sleeper"))
    [record] = query(server.settings.state_dir, kind="execution", tool="sleeper")
    assert record.outcome == "cancelled"


async def test_a_refused_token_ends_the_bridge_with_a_reason(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    server: McpServer = await start_mcp(config_dir, mcp_port=None)
    env = {**os.environ, "SCONNECT_TOKEN": "not-a-jwt", "PYTHONPATH": str(REPO)}
    done = await trio.run_process(
        [sys.executable, "-m", "engine", "mcp", "stdio", "--url", server.url], env=env, cwd=REPO,
        stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
    )
    assert done.returncode == 1 and b"HTTP 401" in done.stderr, done.stderr
    assert done.stdout == b""


async def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "SCONNECT_TOKEN": "x", "PYTHONPATH": str(REPO)}
    done = await trio.run_process(
        [sys.executable, "-m", "engine", "mcp", "stdio", "--url", "ws://127.0.0.1:1/ws"], env=env, cwd=REPO,
        stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(b"sconnect mcp: cannot reach ws://127.0.0.1:1/ws: ") and b"refused" in done.stderr
    assert b"Traceback" not in done.stderr


async def test_no_token_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "SCONNECT_TOKEN"} | {"PYTHONPATH": str(REPO)}
    done = await trio.run_process(
        [sys.executable, "-m", "engine", "mcp", "stdio", "--url", "ws://127.0.0.1:1/ws"], env=env, cwd=REPO,
        stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
    )
    assert done.returncode == 2 and b"no token: set SCONNECT_TOKEN or pass --token-file" in done.stderr


async def test_level_1_through_the_bridge_is_asked_in_band(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import mcp_types as types

    (config_dir / "tools.d" / "echo1.yaml").write_text(ECHO2.replace("echo2", "echo1").replace("level 2", "level 1")
                                                       .replace("permission_level: 2", "permission_level: 1"))
    server: McpServer = await start_mcp(config_dir, mcp_port=None)
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": True})

    with trio.fail_after(60):
        async with bridged(server, server.token(), elicitation_callback=elicit) as client:
            result = await client.call_tool("echo1", {"text": "asked"})
    assert not result.is_error and result.structured_content == {"text": "asked"} and len(asked) == 1
    [approval] = query(server.settings.state_dir, kind="approval", tool="echo1")
    assert (approval.outcome, approval.approver) == ("approved", "alice")


async def test_the_bridge_ends_when_the_server_closes_its_connection(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A server that stops (or a token that expires) ends the bridge with the reason, stdin still open."""
    import json
    import subprocess

    server: McpServer = await start_mcp(config_dir, mcp_port=None, shutdown_grace_s=0.5)
    env = {**os.environ, "SCONNECT_TOKEN": server.token(), "PYTHONPATH": str(REPO)}
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "engine", "mcp", "stdio", "--url", server.url], env=env, cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            ping = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
            await process.stdin.send_all(json.dumps(ping).encode() + b"\n")
            answer = await process.stdout.receive_some(65536)  # the bridge is connected and serving
            assert b'"id":1' in answer.replace(b" ", b"")
            server.handle.stop()
            code = await process.wait()
            err = await process.stderr.receive_some(4096)
        finally:
            if process.returncode is None:
                process.kill()
    assert code == 1 and b"the server closed the connection (1001: server shutting down)" in err, err
