"""Requests go from our gate straight to the SDK's session manager, answered exactly as through its Starlette app.

:func:`engine.mcp._http.build_app` hands an authenticated request to
``server.session_manager.handle_request`` wrapped in :func:`answering_errors`,
skipping the Starlette app (middleware stack, router) the SDK builds around it.
The parity test serves one SDK server both ways at once (the same session manager,
its lifespan run by the app) and sends every request shape through each: a session
opened and a tool called on it, a Host or Origin that is not ours, a wrong
Content-Type, an oversized body, malformed JSON, a body that is not JSON-RPC, a
missing Accept, an unknown session, DELETE and PUT, and over the stateless
2026-07-28 revision a call, an unknown tool, a malformed envelope and a GET; the
status, headers and body must match byte for byte (a session's own id aside).
The error tests raise from the app and compare with Starlette's
``ServerErrorMiddleware``: the same 500 before the response started, nothing more
after it, and the exception raised on to the server either way.

The pin tests fail loudly when the SDK changes what these rely on: the SDK's
``Server`` carries exactly its OpenTelemetry middleware by default (we run it only
while tracing is on), and its Starlette app is the session manager under one route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from engine.mcp._http import answering_errors
from tests.mcp.asgi import exchange

LIMIT = 2000
HOST = [(b"host", b"127.0.0.1:8000")]
ACCEPT = [(b"accept", b"application/json, text/event-stream")]
JSON = [(b"content-type", b"application/json")]
MODERN = "2026-07-28"
# A 2026-07-28 tools/call names its revision, method and tool in headers too.
CALL_2026 = [(b"mcp-protocol-version", MODERN.encode()), (b"mcp-method", b"tools/call")]


def _sdk_server() -> Any:
    import mcp_types as types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
        return types.ListToolsResult(tools=[types.Tool(name="double", description="doubles", input_schema=schema)])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        from mcp.shared.exceptions import MCPError

        if params.name != "double":
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        x = (params.arguments or {}).get("x")
        if not isinstance(x, int):
            problems = {"problems": ["x: not an integer"]}
            raise MCPError(types.INVALID_PARAMS, "invalid arguments for double", data=problems)
        value = 2 * x
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(value))])

    return Server("parity", on_list_tools=list_tools, on_call_tool=call_tool)


@asynccontextmanager
async def _both_ways() -> AsyncIterator[tuple[Any, Any]]:
    """One SDK server as its Starlette app and as our direct path, its lifespan running."""
    from mcp.server.transport_security import TransportSecuritySettings

    server = _sdk_server()
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"],
                                         allowed_origins=["http://127.0.0.1:*"])
    app = server.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host="127.0.0.1",
                                     max_request_body_size=LIMIT)
    direct = answering_errors(server.session_manager.handle_request)
    to_app, app_reads = trio.open_memory_channel[dict[str, Any]](2)
    app_writes, from_app = trio.open_memory_channel[dict[str, Any]](2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                           app_reads.receive, app_writes.send)
        with trio.fail_after(10):
            await to_app.send({"type": "lifespan.startup"})
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        yield app, direct
        with trio.fail_after(10):
            await to_app.send({"type": "lifespan.shutdown"})
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


async def _exchange(app: Any, method: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> dict[str, Any]:
    with trio.fail_after(10):
        return await exchange(app, method, headers, body)


def _rpc(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> bytes:
    message = {"jsonrpc": "2.0", "id": id_, "method": method, **({"params": params} if params else {})}
    return json.dumps(message).encode()


def _modern(name: str, arguments: dict[str, Any]) -> bytes:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    return _rpc("tools/call", {"name": name, "arguments": arguments, "_meta": meta})


def _session_free(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with its session's id masked (each way opens its own session)."""
    session = dict(answer["headers"]).get(b"mcp-session-id")
    masked = [(k, b"<session>" if k == b"mcp-session-id" else v) for k, v in answer["headers"]]
    body = answer["body"].replace(session, b"<session>") if session else answer["body"]
    return {**answer, "headers": masked, "body": body}


SHAPES: dict[str, tuple[str, list[tuple[bytes, bytes]], bytes]] = {
    "host not ours": ("POST", [(b"host", b"evil.example:8000"), *ACCEPT, *JSON], _rpc("ping")),
    "origin not ours": ("POST", [*HOST, (b"origin", b"http://evil.example"), *ACCEPT, *JSON], _rpc("ping")),
    "wrong content type": ("POST", [*HOST, *ACCEPT, (b"content-type", b"text/plain")], _rpc("ping")),
    "oversized body": ("POST", [*HOST, *ACCEPT, *JSON], _rpc("ping", {"pad": "x" * (2 * LIMIT)})),
    "malformed json": ("POST", [*HOST, *ACCEPT, *JSON], b'{"jsonrpc": "2.0", "id": 1, "method": '),
    "not json-rpc": ("POST", [*HOST, *ACCEPT, *JSON], b'{"hello": "world"}'),
    "no accept": ("POST", [*HOST, *JSON], _rpc("ping")),
    "unknown session": ("POST", [*HOST, *ACCEPT, *JSON, (b"mcp-session-id", b"nope")], _rpc("ping")),
    "delete unknown session": ("DELETE", [*HOST, (b"mcp-session-id", b"nope")], b""),
    "put": ("PUT", [*HOST, *ACCEPT, *JSON], _rpc("ping")),
    "2026 call": ("POST", [*HOST, *ACCEPT, *JSON, *CALL_2026, (b"mcp-name", b"double")],
                  _modern("double", {"x": 21})),
    "2026 unknown tool": ("POST", [*HOST, *ACCEPT, *JSON, *CALL_2026, (b"mcp-name", b"triple")],
                          _modern("triple", {"x": 1})),
    "2026 bad arguments": ("POST", [*HOST, *ACCEPT, *JSON, *CALL_2026, (b"mcp-name", b"double")],
                           _modern("double", {"x": "many"})),
    "2026 header mismatch": ("POST", [*HOST, *ACCEPT, *JSON, *CALL_2026, (b"mcp-name", b"triple")],
                             _modern("double", {"x": 1})),
    "2026 no envelope": ("POST", [*HOST, *ACCEPT, *JSON, *CALL_2026, (b"mcp-name", b"double")],
                         _rpc("tools/call", {"name": "double", "arguments": {"x": 1}})),
    "2026 get": ("GET", [*HOST, *ACCEPT, (b"mcp-protocol-version", MODERN.encode())], b""),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_each_request_shape_is_answered_as_by_the_starlette_app(shape: str) -> None:
    method, headers, body = SHAPES[shape]
    async with _both_ways() as (app, direct):
        through_app = _session_free(await _exchange(app, method, headers, body))
        straight = _session_free(await _exchange(direct, method, headers, body))
    assert straight == through_app
    if shape == "2026 call":
        assert through_app["status"] == 200 and b'"text":"42"' in through_app["body"]


async def test_a_session_opened_and_a_tool_called_on_it_are_answered_alike() -> None:
    init = _rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                               "clientInfo": {"name": "parity", "version": "1"}})
    answers = []
    async with _both_ways() as (app, direct):
        for way in (app, direct):
            opened = await _exchange(way, "POST", [*HOST, *ACCEPT, *JSON], init)
            session = [(b"mcp-session-id", dict(opened["headers"])[b"mcp-session-id"]),
                       (b"mcp-protocol-version", b"2025-11-25")]
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
            initialized = await _exchange(way, "POST", [*HOST, *ACCEPT, *JSON, *session], note)
            called = await _exchange(way, "POST", [*HOST, *ACCEPT, *JSON, *session],
                                     _rpc("tools/call", {"name": "double", "arguments": {"x": 4}}, 2))
            answers.append([_session_free(a) for a in (opened, initialized, called)])
    assert answers[0] == answers[1]
    assert answers[0][2]["status"] == 200 and b'"text":"8"' in answers[0][2]["body"]


class Boom(Exception):
    pass


async def _raising(scope: Any, receive: Any, send: Any, *, after_start: bool) -> None:
    if after_start:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    raise Boom("the app failed")


@pytest.mark.parametrize("after_start", [False, True])
async def test_an_error_is_answered_as_starlette_answers_it(after_start: bool) -> None:
    from functools import partial

    from starlette.middleware.errors import ServerErrorMiddleware

    app = partial(_raising, after_start=after_start)
    sent: dict[str, list[dict[str, Any]]] = {}
    for label, way in (("starlette", ServerErrorMiddleware(app)), ("ours", answering_errors(app))):
        messages: list[dict[str, Any]] = []
        sent[label] = messages

        async def send(message: Any, messages: list[dict[str, Any]] = messages) -> None:
            messages.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        with pytest.raises(Boom):
            await way({"type": "http", "method": "POST", "path": "/mcp", "headers": []}, receive, send)
    assert sent["ours"] == sent["starlette"]
    assert [m["type"] for m in sent["ours"]] == ["http.response.start"] * after_start + (
        [] if after_start else ["http.response.start", "http.response.body"])


def test_the_sdk_server_carries_only_its_opentelemetry_middleware_by_default() -> None:
    """Pinned: Gateway.server() wraps this one middleware to run only while tracing is on."""
    from mcp.server._otel import OpenTelemetryMiddleware

    middleware = _sdk_server().middleware
    assert len(middleware) == 1 and type(middleware[0]) is OpenTelemetryMiddleware


def test_the_sdk_app_is_the_session_manager_under_one_route() -> None:
    """Pinned: what the direct path skips is a router holding the session manager at /mcp, nothing else."""
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from starlette.routing import Route

    server = _sdk_server()
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    [route] = app.routes
    assert isinstance(route, Route) and route.path == "/mcp" and route.methods is None
    assert isinstance(route.app, StreamableHTTPASGIApp) and route.app.session_manager is server.session_manager
    assert app.user_middleware == []
