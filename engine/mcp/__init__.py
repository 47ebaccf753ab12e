"""The MCP front door: our tools and resources for any MCP client, under our policy, approvals, sandbox and audit.

``serve_mcp`` serves Streamable HTTP inside the server (``sconnect serve --mcp-port``);
``run_bridge`` speaks MCP on stdin/stdout to a running server over our WebSocket
protocol (``sconnect mcp stdio``).  The MCP SDK costs ~2 s to import, so these names
load it on first use, not when this package is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["serve_mcp"]


def __getattr__(name: str) -> Any:
    if name == "serve_mcp":
        from ._http import serve_mcp

        return serve_mcp
    raise AttributeError(name)
