"""The 2026-07-28 revision's ``Mcp-Param-*`` headers are checked against the caller's own listing.

The SDK's transport checks a ``tools/call``'s ``Mcp-Param-*`` headers against the
tool's ``x-mcp-header`` annotations before dispatch; our gateway hands it the schema
from the caller's cached ``tools/list`` (instead of the SDK listing every tool for
every call).  These tests send real requests through the SDK's client, with an
``httpx2.Auth`` that rewrites the header on the way out where a test needs a lie:
- a header that matches its argument is let through and the call runs;
- a header that contradicts its argument is refused (HEADER_MISMATCH), nothing runs;
- for a tool the caller may not see (level 3), a contradicting header is not checked
  against that tool's schema (which would reveal it exists): the call is an unknown tool.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from tests.mcp.conftest import McpServer

MODERN = "2026-07-28"

REGIONAL = """\
name: {name}
description: Says it ran (test tool with an argument mirrored into an Mcp-Param header).
permission_level: {level}
command: [/bin/sh, -c, "echo '{{\\"ran\\": true}}'"]
parameters:
  type: object
  properties:
    region: {{type: string, x-mcp-header: Region}}
  required: [region]
sandbox: {{timeout: 5s, isolation: process}}
"""


def _rewriting(token: str, region: str | None) -> Any:
    """An httpx2 Auth sending the bearer token and, on tools/call requests, ``Mcp-Param-Region: region``."""
    import httpx2

    class Rewrite(httpx2.Auth):
        async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            request.headers["Authorization"] = f"Bearer {token}"
            if region is not None and b'"tools/call"' in request.content:
                request.headers["Mcp-Param-Region"] = region
            yield request

    return Rewrite()


async def _call(server: McpServer, name: str, region: str | None) -> Any:
    """The call's result, or the MCPError it was refused with."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.exceptions import MCPError

    async with create_mcp_http_client(auth=_rewriting(server.token(), region)) as http:
        async with Client(streamable_http_client(server.mcp, http_client=http), mode=MODERN) as client:
            await client.list_tools()  # the client mirrors annotated arguments of listed tools into headers
            try:
                return await client.call_tool(name, {"region": "eu"})
            except MCPError as refused:
                return refused


@pytest.fixture
async def regional(start_mcp, config_dir: Path) -> McpServer:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "regional.yaml").write_text(REGIONAL.format(name="regional", level=0))
    (config_dir / "tools.d" / "regional_secret.yaml").write_text(REGIONAL.format(name="regional_secret", level=3))
    return await start_mcp(config_dir)  # type: ignore[no-any-return]


def _executions(server: McpServer, name: str) -> list[Any]:
    return [r for r in query(server.settings.state_dir, kind="execution") if r.target == name]


async def test_a_header_matching_its_argument_is_let_through(regional: McpServer) -> None:
    with trio.fail_after(30):
        result = await _call(regional, "regional", None)  # the SDK client's own header: Mcp-Param-Region: eu
    assert not result.is_error, result
    assert result.structured_content == {"ran": True}
    assert [r.outcome for r in _executions(regional, "regional")] == ["ok"]


async def test_a_header_contradicting_its_argument_is_refused(regional: McpServer) -> None:
    from mcp.shared.exceptions import MCPError
    from mcp_types.jsonrpc import HEADER_MISMATCH

    with trio.fail_after(30):
        refused = await _call(regional, "regional", "us")
    assert isinstance(refused, MCPError) and refused.error.code == HEADER_MISMATCH, refused
    assert not _executions(regional, "regional")


async def test_a_hidden_tool_is_unknown_whatever_its_headers(regional: McpServer) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        refused = await _call(regional, "regional_secret", "us")
    assert isinstance(refused, MCPError) and refused.error.message == "Unknown tool: regional_secret", refused
    assert not _executions(regional, "regional_secret")
