"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

A bare trio TCP server speaking HTTP/1.1 through h11 (one request per
connection, ``Connection: close``).  ``POST /v1/chat/completions`` is answered
from a script per requested ``model`` (the body's ``model`` field), one
:class:`Reply` per request, in order; when a script runs out its last reply
repeats.  Every request is recorded (``requests``: model and body, in arrival
order), so tests assert on what the server saw, not on time.

Replies: :func:`text` (streamed deltas, or one JSON answer for ``stream:
false``), :func:`tool_call`, :func:`status` (any status, with headers such as
``Retry-After``), :func:`garbage` (a 200 event stream whose data is not JSON),
:func:`hang` (accepts and never answers: for timeouts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import h11
import trio


@attrs.frozen
class Reply:
    kind: str  # text | tool_call | status | garbage | hang
    text: str = ""
    name: str = ""
    arguments: Any = None
    code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""


def text(answer: str) -> Reply:
    return Reply("text", text=answer)


def tool_call(name: str, arguments: Any) -> Reply:
    return Reply("tool_call", name=name, arguments=arguments)


def status(code: int, body: str = '{"error": {"message": "scripted"}}', **headers: str) -> Reply:
    return Reply("status", code=code, body=body, headers=tuple((k.replace("_", "-"), v) for k, v in headers.items()))


def garbage() -> Reply:
    return Reply("garbage")


def hang() -> Reply:
    return Reply("hang")


@attrs.frozen
class Seen:
    model: str
    body: dict[str, Any]


@attrs.define(eq=False)
class ScriptedServer:
    port: int = 0
    scripts: dict[str, list[Reply]] = attrs.field(factory=dict)
    requests: list[Seen] = attrs.field(factory=list)
    _next: dict[str, int] = attrs.field(factory=dict)
    # Set whenever a request arrives, so a test can wait for "n requests seen".
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, replies: Sequence[Reply]) -> None:
        self.scripts[model] = list(replies)
        self._next[model] = 0

    def seen(self, model: str | None = None) -> list[Seen]:
        return [r for r in self.requests if model is None or r.model == model]

    def _reply_for(self, model: str) -> Reply:
        replies = self.scripts.get(model) or [status(404, '{"error": {"message": "no such model"}}')]
        index = self._next.get(model, 0)
        self._next[model] = index + 1
        return replies[min(index, len(replies) - 1)]

    async def serve(self, *, task_status: trio.TaskStatus[ScriptedServer] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request, body = await _read_request(conn, stream)
            if request is None:
                return
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {}
            model = str(parsed.get("model", "")) if isinstance(parsed, dict) else ""
            self.requests.append(Seen(model, parsed if isinstance(parsed, dict) else {}))
            self._arrived.set()
            self._arrived = trio.Event()
            if request.target != b"/v1/chat/completions" or request.method != b"POST":
                await _send(conn, stream, 404, b'{"error": "not found"}', "application/json")
                return
            await self._answer(conn, stream, self._reply_for(model), bool(parsed.get("stream", False)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            await self._arrived.wait()

    async def _answer(self, conn: h11.Connection, stream: trio.SocketStream, reply: Reply, streamed: bool) -> None:
        if reply.kind == "hang":
            await trio.sleep_forever()
        if reply.kind == "status":
            await _send(conn, stream, reply.code, reply.body.encode(), "application/json", reply.headers)
            return
        if reply.kind == "garbage":
            await _send(conn, stream, 200, b"data: this is not json\n\n", "text/event-stream")
            return
        if not streamed:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if reply.kind == "tool_call":
                message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
                    "name": reply.name, "arguments": json.dumps(reply.arguments)}}]
            body = {"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "finish_reason": "stop"}]}
            await _send(conn, stream, 200, json.dumps(body).encode(), "application/json")
            return
        events: list[dict[str, Any]] = []
        if reply.kind == "text":
            words = reply.text.split(" ")
            events += [_chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        else:
            arguments = json.dumps(reply.arguments)
            half = len(arguments) // 2
            events.append(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": reply.name, "arguments": arguments[:half]}}]}))
            events.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}))
        events.append(_chunk({}, "stop" if reply.kind == "text" else "tool_calls"))
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        await _send(conn, stream, 200, data, "text/event-stream")


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return request, bytes(body)


async def _send(
    conn: h11.Connection, stream: trio.SocketStream, code: int, body: bytes, content_type: str,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    response = h11.Response(status_code=code, headers=[
        ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close"), *headers,
    ])
    await stream.send_all(conn.send(response) or b"")
    await stream.send_all(conn.send(h11.Data(data=body)) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
