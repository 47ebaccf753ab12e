"""Answers that are only their response go out as JSON; anything streamed first stays a stream.

The unit tests drive :func:`engine.mcp._oneshot.json_when_whole` with the ASGI
messages the SDK's SSE response sends and check what reaches the wire: one response
event becomes an ``application/json`` body with a length (and the session header
kept); a ping, a notification, a request to the client, an event id, a second
event, a message written in another key order, an error status, a non-SSE answer or
a malformed event pass through unchanged.  The end-to-end test
makes tool calls with the SDK's own client and checks that they all travel on one
TCP connection (before, each SSE answer cost the client its connection).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from engine.mcp._oneshot import json_when_whole
from tests.mcp.conftest import McpServer

SSE_HEAD = {
    "type": "http.response.start", "status": 200,
    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"mcp-session-id", b"abc")],
}
RESPONSE = {"jsonrpc": "2.0", "id": 7, "result": {"content": [], "isError": False}}
PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}


def _event(message: Any, *extra: str) -> bytes:
    fields = [*extra, "event: message", f"data: {json.dumps(message)}"]
    return "".join(f"{field}\r\n" for field in fields).encode() + b"\r\n"


async def _through(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    wrapped = json_when_whole(send)
    for message in messages:
        await wrapped(message)
    return sent


def _body(chunk: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def test_a_stream_of_only_the_response_is_sent_as_json() -> None:
    sent = await _through(SSE_HEAD, _body(_event(RESPONSE)), _body(b"", more=False))
    head, body = sent
    headers = dict(head["headers"])
    assert head["status"] == 200 and headers[b"content-type"] == b"application/json"
    assert headers[b"mcp-session-id"] == b"abc" and int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == RESPONSE and body["more_body"] is False


async def test_a_large_response_with_a_string_id_is_sent_as_json() -> None:
    large = {"jsonrpc": "2.0", "id": 'say "hi"', "result": {"text": "x\n" * 500_000}}
    head, body = await _through(SSE_HEAD, _body(_event(large)), _body(b"", more=False))
    assert dict(head["headers"])[b"content-type"] == b"application/json" and json.loads(body["body"]) == large


async def test_an_error_response_is_sent_as_json_too() -> None:
    error = {"jsonrpc": "2.0", "id": "x", "error": {"code": -32602, "message": "Unknown tool: nope"}}
    head, body = await _through(SSE_HEAD, _body(_event(error)), _body(b"", more=False))
    assert dict(head["headers"])[b"content-type"] == b"application/json" and json.loads(body["body"]) == error


async def test_whatever_comes_first_but_the_response_streams_unchanged() -> None:
    cases = {
        "a progress notification": _event(PROGRESS),
        "a ping": b": ping - 2026-11-30\r\n\r\n",
        "an event id (resumable)": _event(RESPONSE, "id: 1"),
        "two events": _event(PROGRESS) + _event(RESPONSE),
        "an unfinished event": _event(RESPONSE)[:-2],
        "a request to the client": _event({"jsonrpc": "2.0", "id": 1, "method": "elicitation/create", "params": {}}),
        "data that is not JSON": b"event: message\r\ndata: {not json\r\n\r\n",
        "another event type": _event(RESPONSE).replace(b"event: message", b"event: other"),
        "an empty end": b"",
        "a response written in another key order": _event({"id": 7, "jsonrpc": "2.0", "result": {}}),
        "a message with a string id then a method": _event({"jsonrpc": "2.0", "id": 'a\\"b', "method": "ping"}),
    }
    for label, first in cases.items():
        messages = [SSE_HEAD, _body(first), _body(_event(RESPONSE)), _body(b"", more=False)]
        assert await _through(*messages) == messages, label


async def test_answers_that_are_not_an_sse_200_pass_unchanged() -> None:
    json_head = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    failed = {**SSE_HEAD, "status": 500}
    for head in (json_head, failed):
        messages = [head, _body(_event(RESPONSE), more=False)]
        assert await _through(*messages) == messages


async def test_the_sdk_client_makes_its_calls_on_one_connection(mcp_server: McpServer) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    peers: set[Any] = set()
    kinds: list[str] = []

    async def note(response: Any) -> None:
        if b'"tools/call"' not in response.request.content:
            return  # the session's GET stream and its opening requests may use other connections
        peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
        kinds.append(response.headers.get("content-type", ""))

    headers = {"Authorization": f"Bearer {mcp_server.token()}"}
    with trio.fail_after(30):
        async with httpx2.AsyncClient(headers=headers, event_hooks={"response": [note]}) as http:
            async with Client(streamable_http_client(mcp_server.mcp, http_client=http), mode="legacy") as client:
                for i in range(3):
                    result = await client.call_tool("calculator", {"expression": f"{i}+1"})
                    assert not result.is_error and result.structured_content["result"] == i + 1
    assert "application/json" in kinds and not any(kind.startswith("text/event-stream") for kind in kinds), kinds
    assert len(peers) == 1, peers
