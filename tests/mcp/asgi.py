"""One HTTP request through an ASGI app in this process, as hypercorn hands it over.

Shared by the MCP endpoint's parity tests (`test_http_direct.py`) and `bench/bench_mcp.py
--layer`: the request's whole body in one message, a disconnect once the response has
ended; the answer's status, headers (names lower-cased) and whole body.
"""

from __future__ import annotations

from typing import Any

import trio


async def exchange(app: Any, method: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> dict[str, Any]:
    """One request to /mcp through ``app``: its status, headers and whole body."""
    sent: list[dict[str, Any]] = []
    answered = trio.Event()
    request = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if request:
            return request.pop()
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    [head] = [m for m in sent if m["type"] == "http.response.start"]
    return {
        "status": head["status"], "headers": [(bytes(k).lower(), bytes(v)) for k, v in head.get("headers", [])],
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    }  # fmt: skip
