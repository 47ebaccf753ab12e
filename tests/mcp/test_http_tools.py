"""MCP over Streamable HTTP: the SDK's client lists and calls our tools, in both protocol revisions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from engine.audit import query
from tests.conftest import processes_with
from tests.engine.conftest import SLEEPER
from tests.mcp.conftest import MODES, McpServer, mcp_client, wait_until


@pytest.mark.parametrize("mode", MODES)
async def test_list_and_call_a_level_0_tool(mcp_server: McpServer, mode: str) -> None:
    with trio.fail_after(30):
        async with mcp_client(mcp_server.mcp, mcp_server.token(), mode=mode, name="test-client") as client:
            listed = await client.list_tools()
            names = {tool.name for tool in listed.tools}
            assert {"calculator", "shell", "read_file"} <= names
            assert "send_payment" not in names  # level 3
            calculator = next(t for t in listed.tools if t.name == "calculator")
            assert calculator.input_schema["required"] == ["expression"]
            result = await client.call_tool("calculator", {"expression": "6*7"})
            assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
    assert not result.is_error, result
    assert result.structured_content is not None and result.structured_content["result"] == 42
    [execution] = [r for r in query(mcp_server.settings.state_dir, kind="execution") if r.target == "calculator"]
    details = execution.to_dict()["details"]
    assert details["transport"] == "mcp-http" and details["mcp_request_id"] is not None
    assert execution.subject == "alice" and execution.outcome == "ok"
    assert details["mcp_client"] == "test-client", details


FAILING = """\
name: failing
description: Fails with a message on stderr (test tool).
permission_level: 0
command: [/bin/sh, -c, "echo 'it broke: disk on fire' >&2; exit 3"]
parameters: {type: object}
sandbox: {timeout: 5s, isolation: process}
"""


async def test_a_failing_tool_is_an_error_result_with_its_stderr(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "failing.yaml").write_text(FAILING)
    server: McpServer = await start_mcp(config_dir)
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token()) as client:
            result = await client.call_tool("failing", {})
    assert result.is_error
    text = result.content[0].text
    assert "disk on fire" in text and text.startswith("error:"), text


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_failing_the_schema_are_invalid_params_with_problems(mcp_server: McpServer, mode: str) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        async with mcp_client(mcp_server.mcp, mcp_server.token(), mode=mode) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool("calculator", {"expression": 42, "extra": 1})
            # The server and the session carry on.
            assert not (await client.call_tool("calculator", {"expression": "1+1"})).is_error
    assert caught.value.error.code == -32602
    problems = caught.value.error.data["problems"]
    assert any("expression" in p and "string" in p for p in problems), problems
    assert any("extra" in p for p in problems), problems
    [record] = [r for r in query(mcp_server.settings.state_dir, kind="decision") if r.outcome == "invalid_arguments"]
    assert record.target == "calculator" and record.to_dict()["details"]["transport"] == "mcp-http"


@pytest.mark.parametrize("name", ["send_payment", "no_such_tool"])
async def test_hidden_and_unknown_tools_are_unknown_and_audited(mcp_server: McpServer, name: str) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        async with mcp_client(mcp_server.mcp, mcp_server.token()) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {"amount": 1})
    assert caught.value.error.code == -32602 and caught.value.error.message == f"Unknown tool: {name}"
    [record] = [r for r in query(mcp_server.settings.state_dir, kind="decision") if r.target == name]
    assert (record.to_dict()["decision"]["effect"], record.outcome) == ("deny", "unknown_tool")
    assert not [r for r in query(mcp_server.settings.state_dir, kind="execution") if r.target == name]


async def test_cancelling_the_request_kills_the_sandbox(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """2025-11-25 session: the client sends notifications/cancelled; the session stays usable."""
    marker = f"1732.{os.getpid():08d}"  # sleep's argument: a number unique to this run
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    server: McpServer = await start_mcp(config_dir)
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token()) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "sleeper", {})
                await wait_until(lambda: processes_with(marker))
                nursery.cancel_scope.cancel()
            await wait_until(lambda: not processes_with(marker))
            assert not (await client.call_tool("calculator", {"expression": "2+2"})).is_error
        await _execution_recorded(server, "sleeper", "cancelled")


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_goes_away_has_its_sandbox_killed(start_mcp, config_dir: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Both revisions: the client closes its connections mid-call (2026-07-28 cancels only this way)."""
    marker = f"{1733 + MODES.index(mode)}.{os.getpid():08d}"
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    server: McpServer = await start_mcp(config_dir)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                async with mcp_client(server.mcp, server.token(), mode=mode) as client:
                    await client.call_tool("sleeper", {})

            nursery.start_soon(call)
            await wait_until(lambda: processes_with(marker))
            nursery.cancel_scope.cancel()
        await wait_until(lambda: not processes_with(marker))
        await _execution_recorded(server, "sleeper", "cancelled")
        async with mcp_client(server.mcp, server.token(), mode=mode) as client:
            assert not (await client.call_tool("calculator", {"expression": "2+2"})).is_error


async def _execution_recorded(server: McpServer, target: str, outcome: str) -> None:
    while True:
        records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir))
        found = [r for r in records if r.target == target and r.kind == "execution"]
        if found:
            assert [r.outcome for r in found] == [outcome]
            return
        await trio.sleep(0.02)


async def test_with_tls_mcp_is_https(start_mcp, config_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    import httpx

    from tests.engine.tls import self_signed

    cert, key = self_signed(tmp_path)
    server: McpServer = await start_mcp(config_dir, tls_cert=cert, tls_key=key)
    assert server.mcp.startswith("https://127.0.0.1:")
    with trio.fail_after(30):
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=context) as http:
            response = await http.post(server.mcp, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 401  # TLS works; the gate answers
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as untrusting:
                await untrusting.post(server.mcp, json={})


async def test_a_reload_changes_the_listing(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The per-caller listing is kept for the configuration in force, and only for it."""
    server: McpServer = await start_mcp(config_dir, reload_interval_s=0.1)
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token()) as client:
            assert "failing" not in {t.name for t in (await client.list_tools()).tools}
            (config_dir / "tools.d" / "failing.yaml").write_text(FAILING)
            while "failing" not in {t.name for t in (await client.list_tools()).tools}:  # noqa: ASYNC110
                await trio.sleep(0.05)  # the reload sends MCP clients no event
