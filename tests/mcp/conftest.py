"""A real server with its MCP listener on 127.0.0.1 (port 0), and the MCP SDK's client against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine.auth import AuthSettings, issue
from engine.server import ServerSettings, serve
from tests.conftest import plain_http2_tls
from tests.engine.conftest import SECRET
from tests.engine.conftest import config_dir as config_dir  # noqa: F401  (fixtures reused here)
from tests.engine.conftest import state_dir as state_dir  # noqa: F401

pytest.importorskip("mcp", reason="the MCP SDK is the optional extra 'mcp'")
pytest.importorskip("hypercorn", reason="hypercorn is the optional extra 'mcp'")

MODES = ("legacy", "2026-07-28")


@asynccontextmanager
async def mcp_client(
    url: str, token: str | None, *, mode: str = "legacy", name: str = "sconnect-tests", **options: Any
) -> AsyncIterator[Any]:
    """The SDK's own client on ``url``, sending ``Authorization: Bearer token`` when given."""
    import httpx2
    import mcp_types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    # The SDK's create_mcp_http_client with the run's one default SSL context (plain_http2_tls).
    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, verify=plain_http2_tls()) as http:
        async with Client(
            streamable_http_client(url, http_client=http), mode=mode,
            client_info=mcp_types.Implementation(name=name, version="1"), **options,
        ) as client:
            yield client


async def wait_until(condition: Callable[[], Any], interval_s: float = 0.02) -> None:
    """Poll ``condition`` (a process appearing, a record written) until it holds; callers bound it with fail_after."""
    while not condition():  # noqa: ASYNC110  (what is polled sends no event)
        await trio.sleep(interval_s)


@attrs.frozen
class McpServer:
    url: str  # the WebSocket endpoint
    mcp: str  # http://127.0.0.1:PORT/mcp ("" when the MCP listener is off)
    settings: ServerSettings
    handle: Any = None  # engine.server.app.ServerHandle: .stop() begins a graceful stop

    def token(self, sub: str = "alice", roles: tuple[str, ...] = ("user",), ttl_s: float = 600) -> str:
        return issue(self.settings.auth, sub, list(roles), ttl_s)


@pytest.fixture
def start_mcp(nursery: trio.Nursery, state_dir: Path) -> Callable[..., Any]:  # noqa: F811
    async def start(config: Path, **overrides: Any) -> McpServer:
        options: dict[str, Any] = {"auth": AuthSettings(secret=SECRET), "port": 0, "mcp_port": 0, **overrides}
        settings = ServerSettings(config_dir=config, state_dir=state_dir, **options)
        handle = await nursery.start(serve, settings)
        assert (handle.mcp is None) == (settings.mcp_port is None)
        return McpServer(handle.websocket, handle.mcp or "", settings, handle)

    return start


@pytest.fixture
async def mcp_server(start_mcp: Callable[..., Any], config_dir: Path) -> McpServer:  # noqa: F811
    return await start_mcp(config_dir)  # type: ignore[no-any-return]
