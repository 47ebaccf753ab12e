"""A streamed (SSE) answer to a POST whose first event is already the final response goes out as plain JSON.

The SDK's 2025-11-25 transport answers every request with an SSE stream, so that
progress notifications and in-band elicitation can precede the result.  Most calls
never send either: the stream carries one event, the response.  Its client then
closes the stream as soon as it has the response, before the end of the chunked
body, which makes its HTTP client drop the connection: every call paid for a new
TCP connection on both sides.

The spec lets the server answer a POST with ``application/json`` or
``text/event-stream`` (a client must accept both).  So the response's head is held
back until its first chunk: when that chunk is exactly one ``message`` event
carrying a JSON-RPC response, the same message is sent as an ``application/json``
body with a length, and the rest of the stream (its end) is dropped.  A response is
told from the other messages by how the SDK writes them (``jsonrpc``, ``id``, then
``result`` or ``error``; a request to the client has ``method`` there, a
notification no ``id``), without parsing what may be a large result: a message
written any other way is streamed, which is always correct.  Anything else (a notification, a
request to the client, a ping comment, an event id for resumption) sends the held
head and streams on unchanged.  The 2026-07-28 transport already defers the same way.
"""

from __future__ import annotations

import re
from typing import Any

# The head of a JSON-RPC response (or error) as the SDK serializes it.
_RESPONSE_HEAD = re.compile(
    rb'\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(?:-?\d+|"(?:[^"\\]|\\.)*")\s*,\s*"(?:result|error)"\s*:'
)
_LINES = re.compile(rb"\r\n|\r|\n")
_DROPPED_HEADERS = {b"content-type", b"content-length", b"transfer-encoding"}


def json_when_whole(send: Any) -> Any:
    """Wrap an ASGI ``send`` of one POST's response as described above."""
    held: dict[str, Any] | None = None
    state = "start"  # start -> held -> (streaming | answered)

    async def wrapped(message: dict[str, Any]) -> None:
        nonlocal held, state
        if state == "answered":
            return  # the end of a stream whose answer went out as JSON
        kind = message.get("type")
        if state == "start":
            if kind == "http.response.start" and message.get("status") == 200 and _is_sse(message):
                held, state = message, "held"
                return
            state = "streaming"
        elif state == "held":
            assert held is not None
            answer = _only_response(message.get("body", b"")) if kind == "http.response.body" else None
            if answer is not None:
                headers = [(k, v) for k, v in held.get("headers", []) if bytes(k).lower() not in _DROPPED_HEADERS]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
                state = "answered"
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": answer, "more_body": False})
                return
            state = "streaming"
            await send(held)
        await send(message)

    return wrapped


def _is_sse(message: dict[str, Any]) -> bool:
    for key, value in message.get("headers", []):
        if bytes(key).lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"text/event-stream"
    return False


def _only_response(chunk: bytes) -> bytes | None:
    """The JSON-RPC response ``chunk`` carries as its one and only SSE event, else None."""
    if not chunk:
        return None
    lines = _LINES.split(bytes(chunk))
    # One event: its lines, then the blank line that ends it, then nothing (the split's last empty piece).
    if len(lines) < 3 or lines[-1] or lines[-2]:
        return None
    data: list[bytes] = []
    for line in lines[:-2]:
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data":
            data.append(value)
        elif field == b"event" and value == b"message":
            continue
        else:
            return None  # a comment (ping), an id (resumable), retry, another event type, a second event
    body = b"\n".join(data)
    return body if _RESPONSE_HEAD.match(body) else None
