"""The ``openai`` provider against a real HTTP server on 127.0.0.1 that plays an
OpenAI-compatible chat-completions endpoint (hand-written HTTP/1.1, chunked SSE)."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import pytest
import trio

from engine.config.converter import converter
from engine.config.model import OpenAIModel, Tool
from engine.config.units import Seconds
from engine.models import TextDelta, ToolCall, ToolDefinition, make_model
from engine.models.openai import (
    ModelError,
    ModelHTTPError,
    ModelProtocolError,
    ModelTimeout,
    ModelUnavailable,
    OpenAIProvider,
)
from engine.server.actions import argument_errors

KEY_ENV = "SCONNECT_TEST_OPENAI_KEY"
KEY = "sk-test-0123456789-do-not-echo"


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@attrs.define(eq=False)
class Exchange:
    """One connection as the handler sees it: the request, and a way to answer."""

    stream: trio.SocketStream
    request: Request

    async def start_sse(self) -> None:
        await self.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )

    async def chunk(self, data: bytes) -> None:
        await self.stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

    async def event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        await self.chunk(f"data: {text}\n\n".encode())

    async def end(self) -> None:
        await self.stream.send_all(b"0\r\n\r\n")

    async def respond(self, status: str, body: bytes, content_type: str = "application/json") -> None:
        await self.stream.send_all(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )

    async def wait_closed_by_client(self) -> None:
        """Returns once the client has closed its side of the connection."""
        try:
            while await self.stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass


Handler = Callable[[Exchange], Awaitable[None]]


@attrs.define(eq=False)
class FakeServer:
    url: str
    requests: list[Request] = attrs.field(factory=list)
    disconnected: trio.Event = attrs.field(factory=trio.Event)


async def read_request(stream: trio.SocketStream) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = await stream.receive_some()
        assert piece, "client closed before sending the request"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = await stream.receive_some()
        assert piece, "client closed in the middle of the body"
        body += piece
    method, path, _ = request_line.split(" ", 2)
    return Request(method, path, headers, json.loads(body) if body else None)


async def start_server(nursery: trio.Nursery, handler: Handler) -> FakeServer:
    server: FakeServer

    async def connection(stream: trio.SocketStream) -> None:
        async with stream:
            request = await read_request(stream)
            server.requests.append(request)
            exchange = Exchange(stream, request)
            await handler(exchange)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    server = FakeServer(url=f"http://127.0.0.1:{port}/v1")
    return server


def model_config(base_url: str, request_timeout: float = 5) -> OpenAIModel:
    return OpenAIModel(
        provider="openai",
        model="test-model",
        base_url=base_url,
        api_key_env=KEY_ENV,
        temperature=0.25,
        request_timeout=Seconds(request_timeout),
    )


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


async def collect(
    provider: OpenAIProvider, messages: Sequence[dict[str, Any]] = (), tools: Sequence[ToolDefinition] = ()
) -> list[TextDelta | ToolCall]:
    items: list[TextDelta | ToolCall] = []
    stream: AsyncIterator[TextDelta | ToolCall] = provider.stream(
        list(messages) or [{"role": "user", "content": "hi"}], tools
    )
    async for item in stream:
        items.append(item)
    return items


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


async def test_text_deltas_stream_as_they_arrive(nursery: trio.Nursery, api_key: str) -> None:
    first_seen = trio.Event()

    async def handler(exchange: Exchange) -> None:
        await exchange.start_sse()
        await exchange.event(chunk({"role": "assistant", "content": ""}))
        await exchange.event(chunk({"content": "Hel"}))
        # "lo" is sent only once the client has yielded "Hel": deltas are not buffered.
        await first_seen.wait()
        await exchange.event(chunk({"content": "lo"}))
        await exchange.event(chunk({}, finish_reason="stop"))
        await exchange.event("[DONE]")
        await exchange.end()

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        config = converter.structure(
            {"provider": "openai", "model": "test-model", "base_url": server.url + "/",
             "api_key_env": KEY_ENV, "request_timeout": "5s"},
            OpenAIModel,
        )
        model = make_model(config)
        assert isinstance(model, OpenAIProvider)
        items = []
        async for item in model.stream([{"role": "user", "content": "say hello"}], []):
            items.append(item)
            first_seen.set()

    assert items == [TextDelta("Hel"), TextDelta("lo")]
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {api_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": "test-model",
        "stream": True,
        "temperature": 0.0,
        "messages": [{"role": "user", "content": "say hello"}],
    }  # no "tools" when there are none


async def test_tool_call_fragments_become_one_call(nursery: trio.Nursery, api_key: str) -> None:
    async def handler(exchange: Exchange) -> None:
        await exchange.start_sse()
        await exchange.event(chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}))
        for piece in ['{"ci', 'ty": "Pa', 'ris", "days"', ": 3}"]:
            await exchange.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await exchange.event(chunk({}, finish_reason="tool_calls"))
        await exchange.event("[DONE]")
        await exchange.end()

    weather = ToolDefinition(
        "get_weather",
        "The forecast for a city.",
        MappingProxyType({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city"]}),
    )
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
         "content": '{"status": "ok", "output": "sunny"}'},
        {"role": "user", "content": "And Paris for 3 days?"},
    ]
    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        items = await collect(OpenAIProvider(model_config(server.url)), history, [weather])

    assert items == [ToolCall(id="call_abc", name="get_weather", arguments={"city": "Paris", "days": 3})]
    body = server.requests[0].body
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The forecast for a city.", "parameters": dict(weather.parameters)}}]
    assert body["temperature"] == 0.25
    sent_call = body["messages"][2]["tool_calls"][0]
    assert sent_call["function"]["name"] == "get_weather"
    assert isinstance(sent_call["function"]["arguments"], str)
    assert json.loads(sent_call["function"]["arguments"]) == {"city": "Rome"}
    assert body["messages"][3] == history[3]
    # The caller's history is not modified by the conversion.
    assert history[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome"}


async def test_several_calls_and_text_malformed_arguments_are_refused_by_validation(
    nursery: trio.Nursery, api_key: str
) -> None:
    async def handler(exchange: Exchange) -> None:
        await exchange.start_sse()
        await exchange.event(chunk({"content": "Checking."}))
        await exchange.event(chunk({"tool_calls": [
            {"index": 1, "id": "call_2", "function": {"name": "clock", "arguments": ""}},
            {"index": 0, "id": "call_1", "function": {"name": "calc", "arguments": '{"expression": '}},
        ]}))
        await exchange.event(chunk({}, finish_reason="tool_calls"))
        # No [DONE]: a finish_reason and the end of the response are enough.
        await exchange.end()

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        items = await collect(OpenAIProvider(model_config(server.url)))

    assert items == [
        TextDelta("Checking."),
        ToolCall(id="call_1", name="calc", arguments='{"expression": '),
        ToolCall(id="call_2", name="clock", arguments={}),
    ]
    calc = Tool(
        name="calc", description="calc", permission_level=0, python="m:f",
        parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
    )
    assert argument_errors(calc, items[1].arguments) == [  # type: ignore[union-attr]
        "arguments: '{\"expression\": ' is not of type 'object'"
    ]


async def test_401_reports_status_and_message_but_not_the_key(nursery: trio.Nursery, api_key: str) -> None:
    async def handler(exchange: Exchange) -> None:
        error = {"error": {"message": f"Incorrect API key provided: {api_key}.", "type": "invalid_request_error",
                           "code": "invalid_api_key"}}
        await exchange.respond("401 Unauthorized", json.dumps(error).encode())

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        with pytest.raises(ModelHTTPError) as caught:
            await collect(OpenAIProvider(model_config(server.url)))

    message = str(caught.value)
    assert caught.value.status == 401
    assert "HTTP 401" in message and "Incorrect API key provided" in message
    assert KEY_ENV in message
    assert api_key not in message and api_key not in repr(caught.value.args)


async def test_missing_key_sends_no_header_and_says_so(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)

    async def handler(exchange: Exchange) -> None:
        await exchange.respond("401 Unauthorized", b'{"error": "unauthorized"}')

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        with pytest.raises(ModelHTTPError, match=rf"HTTP 401 .*: unauthorized \(\${KEY_ENV} is not set"):
            await collect(OpenAIProvider(model_config(server.url)))
    assert "authorization" not in server.requests[0].headers


async def test_server_error_with_text_body(nursery: trio.Nursery, api_key: str) -> None:
    async def handler(exchange: Exchange) -> None:
        await exchange.respond("503 Service Unavailable", b"model is loading\n" + b"x" * 5000, "text/plain")

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        with pytest.raises(ModelHTTPError) as caught:
            await collect(OpenAIProvider(model_config(server.url)))
    assert caught.value.status == 503
    assert "HTTP 503 Service Unavailable" in str(caught.value) and "model is loading" in str(caught.value)
    assert len(str(caught.value)) < 500


async def test_server_that_never_answers_times_out(nursery: trio.Nursery, api_key: str) -> None:
    async def handler(exchange: Exchange) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        started = trio.current_time()
        expected = r"no data from http://127\.0\.0\.1:\d+/v1/chat/completions within 0\.5s"
        with pytest.raises(ModelTimeout, match=expected):
            await collect(OpenAIProvider(model_config(server.url, request_timeout=0.5)))
        assert 0.4 < trio.current_time() - started < 2
    assert isinstance(ModelTimeout("x"), TimeoutError)


async def test_connection_refused() -> None:
    # A bound socket that does not listen: connections to its port are refused, and no one else can take it.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with trio.fail_after(5), pytest.raises(ModelUnavailable, match=rf"cannot connect to http://127\.0\.0\.1:{port}/"):
            await collect(OpenAIProvider(model_config(f"http://127.0.0.1:{port}/v1")))


async def test_bad_base_url() -> None:
    with trio.fail_after(5), pytest.raises(ModelUnavailable, match="cannot use base_url"):
        await collect(OpenAIProvider(model_config("ftp://127.0.0.1/v1")))


@pytest.mark.parametrize(
    ("events", "error", "message"),
    [
        (["{not json"], ModelProtocolError, "not JSON: {not json"),
        (["[1, 2]"], ModelProtocolError, "not a JSON object"),
        ([{"error": {"message": "overloaded, try later"}}], ModelError, "mid-stream: overloaded, try later"),
        ([chunk({"content": "cut"})], ModelProtocolError, "ended before the answer was complete"),
        ([chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, "tool_calls")],
         ModelProtocolError, "without a function name"),
    ],
)
async def test_malformed_streams(
    nursery: trio.Nursery, api_key: str, events: list[Any], error: type[Exception], message: str
) -> None:
    async def handler(exchange: Exchange) -> None:
        await exchange.start_sse()
        for event in events:
            await exchange.event(event)
        await exchange.end()

    with trio.fail_after(5):
        server = await start_server(nursery, handler)
        with pytest.raises(error, match=message) as caught:
            await collect(OpenAIProvider(model_config(server.url)))
    assert isinstance(caught.value, ModelError)


def _hanging_after_hel(server_box: list[FakeServer]) -> Handler:
    async def handler(exchange: Exchange) -> None:
        await exchange.start_sse()
        await exchange.event(chunk({"content": "Hel"}))
        await exchange.wait_closed_by_client()
        server_box[0].disconnected.set()

    return handler


async def test_cancelling_the_consumer_mid_stream_closes_the_request(nursery: trio.Nursery, api_key: str) -> None:
    box: list[FakeServer] = []
    with trio.fail_after(5):
        server = await start_server(nursery, _hanging_after_hel(box))
        box.append(server)
        items = []
        started = trio.current_time()
        with trio.CancelScope() as scope:
            async for item in OpenAIProvider(model_config(server.url)).stream([{"role": "user", "content": "hi"}], []):
                items.append(item)
                scope.cancel()
        assert scope.cancelled_caught
        assert trio.current_time() - started < 1
        with trio.fail_after(1):
            await server.disconnected.wait()
    assert items == [TextDelta("Hel")]


async def test_early_aclose_closes_the_response(nursery: trio.Nursery, api_key: str) -> None:
    box: list[FakeServer] = []
    with trio.fail_after(5):
        server = await start_server(nursery, _hanging_after_hel(box))
        box.append(server)
        stream = OpenAIProvider(model_config(server.url)).stream([{"role": "user", "content": "hi"}], [])
        assert await stream.__anext__() == TextDelta("Hel")
        await stream.aclose()  # type: ignore[attr-defined]
        with trio.fail_after(1):
            await server.disconnected.wait()
