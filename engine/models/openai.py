"""The ``openai`` model: any OpenAI-compatible chat-completions server, streamed.

This is the production seam behind :class:`~engine.models.base.Model`: OpenAI
itself, vLLM, the llama.cpp server, Ollama's ``/v1`` — anything that serves
``POST {base_url}/chat/completions`` with ``stream: true``.

One :meth:`OpenAIProvider.stream` call is one request.  Text deltas are
yielded as they arrive; tool calls come in fragments (id, name and argument
text spread over many chunks, keyed by ``index``) and are yielded whole, in
index order, once the stream has ended.  Their ``arguments`` are the parsed
JSON the model wrote; empty argument text means ``{}``.  Argument text that is
not JSON is yielded as that text, a ``str``: every tool's schema asks for an
object, so the engine's validation refuses the call with ``arguments: '...' is
not of type 'object'`` and the model reads that back and can try again,
instead of the whole turn failing.

The API key is read from the environment variable named by ``api_key_env`` at
each request and sent as ``Authorization: Bearer``, only when that variable is
set (a local server usually needs none; a remote one then answers 401, which
is reported naming the variable).  The key is never logged, and is cut out of
any server message quoted in an error.

Cancellation: the HTTP client and the response live inside the generator, in
``async with`` blocks.  Cancelling the consumer while it waits for the next
item cancels the request; closing the generator early (``aclose()``, or
leaving ``contextlib.aclosing``) closes the response and its connection.  No
request outlives the step.  ``request_timeout`` bounds connecting and each
wait for data, not the whole answer, which may stream for longer: a caller
wanting an overall deadline sets one with ``trio.fail_after``.

Errors (every failure of a step raises one of these, translated at the
boundary from httpx's exceptions, with a message meant for an operator)::

    ModelError                  root: the model step failed
    ├── ModelUnavailable        cannot connect: refused, DNS failure, TLS, bad base_url
    ├── ModelTimeout            (also TimeoutError) no connection or no data within request_timeout
    ├── ModelHTTPError          the server answered a non-2xx status; ``.status``
    └── ModelProtocolError      the answer is not the expected stream of JSON chunks

An error the server reports inside an otherwise good stream
(``data: {"error": ...}``) is a plain :class:`ModelError`.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config.model import OpenAIModel
from ..config.model_providers import ModelProvider, register
from .base import Message, ModelError, TextDelta, ToolCall, ToolDefinition

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger(__name__)

# How much of an error body is read, and how much of its message is quoted.
_MAX_ERROR_BODY_BYTES = 64 * 1024
_MAX_QUOTED_CHARS = 300


class ModelUnavailable(ModelError):
    """The server could not be reached (refused, DNS failure, TLS, bad URL)."""


class ModelTimeout(ModelError, TimeoutError):
    """No connection within ``connect_timeout``, or no data within ``timeout``."""

    def __init__(self, message: str, *, connecting: bool = False) -> None:
        super().__init__(message)
        self.connecting = connecting


class ModelHTTPError(ModelError):
    """The server answered with a status other than 2xx."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        # What the server's Retry-After asked for, in seconds from now (None: it did not say).
        self.retry_after_s = retry_after_s


class ModelProtocolError(ModelError):
    """The answer was not a well-formed stream of chat-completion chunks."""


# Statuses worth another attempt (as openai-python): request timeout, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 429})
# A whole (non-streamed) answer is read up to this size.
MAX_ANSWER_BYTES = 8 * 2**20


class OpenAIProvider:
    """A chat-completions endpoint as a :class:`~engine.models.base.Model`.

    Retries: a failure before anything of the answer was yielded (cannot
    connect, connect timeout, HTTP 408/429/5xx) is tried again up to
    ``retries`` times, after :func:`retry_wait`.  Once a piece of the answer
    has been yielded, a failure ends the step: it is never replayed.
    """

    def __init__(self, config: OpenAIModel, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._rng = rng or random.Random()

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        config = self._config
        attempts = config.retries + 1
        for attempt in range(attempts):
            passed_on = False
            try:
                async with contextlib.aclosing(self._attempt(messages, tools)) as items:
                    async for item in items:
                        passed_on = True
                        yield item
                return
            except ModelError as exc:
                wait_s = None if passed_on or attempt + 1 == attempts else retry_wait(config, exc, attempt, self._rng)
                if wait_s is None:
                    raise
                log.info("model %s: attempt %d failed (%s); again in %.3fs", config.model, attempt + 1, exc, wait_s)
            await trio.sleep(wait_s)

    async def _attempt(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        import httpx  # loaded by the first step of such a model, never by loading the configuration

        config = self._config
        content = encode_request(config, messages, tools)
        headers = {"Accept": "text/event-stream" if config.stream else "application/json",
                   "Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env) or None
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        chunks = ChunkStream()
        timeout_s, connect_s = config.read_timeout_s, float(config.connect_timeout)
        tls = await trio.to_thread.run_sync(_default_tls)
        answer: list[TextDelta | ToolCall] = []
        with _map_exceptions(_shown(self._url), timeout_s, connect_s):
            timeout = httpx.Timeout(timeout_s, connect=connect_s)
            async with httpx.AsyncClient(timeout=timeout, verify=tls) as client:
                async with client.stream("POST", self._url, content=content, headers=headers) as response:
                    if not response.is_success:
                        raise await _status_error(response, _shown(self._url), config.api_key_env, key)
                    if not config.stream:
                        answer = parse_completion(await _read_bounded(response, MAX_ANSWER_BYTES))
                    else:
                        # After [DONE] the rest is read and ignored (it is only the end of the body),
                        # as openai-python does: leaving httpx's nested async generators half-consumed
                        # makes trio warn when it finalizes them (encode/httpx#3686). They are left so
                        # only on error, cancellation or an early aclose(), where the response itself is
                        # still closed at once by the ``async with`` blocks.
                        async for line in response.aiter_lines():
                            for delta in chunks.feed(line):
                                yield delta
        if not config.stream:
            for item in answer:
                yield item
            return
        # The connection is closed by now: the calls are complete only at the stream's end.
        for call in chunks.finish():
            yield call


def retry_wait(config: OpenAIModel, error: ModelError, attempt: int, rng: random.Random) -> float | None:
    """Seconds to wait before attempt ``attempt + 2``, or None when ``error`` is not worth another try.

    Retry-After (already in seconds) is honoured, capped at ``retry_max_wait``;
    otherwise ``retry_backoff * 2**attempt``, capped, with "equal jitter" (half
    fixed, half random) so that clients failed together do not return together.
    """
    cap = float(config.retry_max_wait)
    if isinstance(error, ModelHTTPError):
        if error.status not in RETRY_STATUSES and error.status < 500:
            return None
        if error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.0), cap)
    elif isinstance(error, ModelTimeout):
        if not error.connecting:
            return None  # a slow answer is not made faster by asking again
    elif not isinstance(error, ModelUnavailable):
        return None
    ceiling = min(cap, float(config.retry_backoff) * 2**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > limit:
            raise ModelProtocolError(f"the answer is larger than {limit} bytes")
    return bytes(body)


def parse_completion(body: bytes) -> list[TextDelta | ToolCall]:
    """A whole (``stream: false``) chat completion as its text and tool calls."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ModelProtocolError(f"the answer is not JSON: {_quote(body.decode('utf-8', 'replace'))}") from None
    if isinstance(data, dict) and data.get("error"):
        raise ModelError(f"the server reported an error: {_quote(_message_of(data['error']))}")
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ModelProtocolError(f"the answer has no choices: {_quote(body.decode('utf-8', 'replace'))}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ModelProtocolError("the answer's first choice has no message object")
    items: list[TextDelta | ToolCall] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        items.append(TextDelta(text))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ModelProtocolError("the answer's tool_calls is not a list")
    stream = ChunkStream()
    for position, call in enumerate(calls):
        stream._tool_fragment(position, call)
    stream.done = True
    items += stream.finish()
    return items


# Loading the CA bundle takes ~25 ms: done once, in a worker thread, not on the event loop
# at every step (httpx builds a fresh context for each client otherwise).
@functools.cache
def _default_tls() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()


# --- the request ------------------------------------------------------------------------


def encode_request(
    config: OpenAIModel, messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> bytes:
    """The JSON body of one streamed chat-completions request.

    Tool-call ``arguments`` in the history hold parsed JSON (what a
    :class:`ToolCall` carries); the API wants them as JSON text, so they are
    encoded here.  ``tools`` is left out when there are none (some servers
    refuse an empty list).
    """
    body: dict[str, Any] = {
        "model": config.model,
        "stream": bool(config.stream),
        "temperature": float(config.temperature),
        "messages": [_wire_message(message) for message in messages],
    }
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in tools
        ]
    return json.dumps(body, ensure_ascii=False, default=_plain).encode()


def _wire_message(message: Message) -> dict[str, Any]:
    wire = dict(message)
    calls = wire.get("tool_calls")
    if calls:
        wire["tool_calls"] = [_wire_call(call) for call in calls]
    return wire


def _wire_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    function["arguments"] = json.dumps(
        {} if arguments is None else arguments, ensure_ascii=False, default=_plain
    )
    return {**call, "type": call.get("type", "function"), "function": function}


def _plain(value: Any) -> Any:
    # Config mappings are read-only views (MappingProxyType), which json cannot encode.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- the answer: server-sent events of chat-completion chunks (no I/O here) ------------


@attrs.define
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@attrs.define(eq=False)
class ChunkStream:
    """Turns the lines of an SSE response into text deltas, and tool calls at the end.

    Events are ``data:`` lines ended by a blank line (several ``data:`` lines
    join with newlines); comments and other fields are ignored, except an
    ``event: error``.  ``data: [DONE]`` ends the stream.  Raises
    :class:`ModelProtocolError` for data that is not a JSON object and
    :class:`ModelError` for an error the server reports mid-stream.
    """

    done: bool = False
    _finished: bool = False
    _event: str = ""
    _data: list[str] = attrs.field(factory=list)
    _calls: dict[int, _PartialCall] = attrs.field(factory=dict)

    def feed(self, line: str) -> list[TextDelta]:
        if self.done:
            return []
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return []
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return []

    def finish(self) -> list[ToolCall]:
        """The tool calls, once the response has ended; raises if it ended too early."""
        self._dispatch()  # a last event without its blank line
        if not (self.done or self._finished):
            raise ModelProtocolError(
                "the stream ended before the answer was complete (no finish_reason and no [DONE])"
            )
        calls = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                raise ModelProtocolError(f"the server sent tool call #{index} without a function name")
            calls.append(
                ToolCall(
                    id=partial.id or f"call_{uuid.uuid4().hex[:24]}",
                    name=partial.name,
                    arguments=parse_arguments(partial.arguments),
                )
            )
        return calls

    def _dispatch(self) -> list[TextDelta]:
        if not self._data:
            self._event = ""
            return []
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ModelProtocolError(f"the stream carried data that is not JSON: {_quote(data)}") from None
        if event == "error" or (isinstance(chunk, dict) and chunk.get("error")):
            detail = chunk.get("error", chunk) if isinstance(chunk, dict) else chunk
            raise ModelError(f"the server reported an error mid-stream: {_quote(_message_of(detail))}")
        if not isinstance(chunk, dict):
            raise ModelProtocolError(f"a stream chunk is not a JSON object: {_quote(data)}")
        return self._chunk(chunk)

    def _chunk(self, chunk: Mapping[str, Any]) -> list[TextDelta]:
        choices = chunk.get("choices") or []  # a final usage chunk has none
        if not isinstance(choices, list):
            raise ModelProtocolError(f"'choices' is not a list in chunk {_quote(json.dumps(chunk))}")
        deltas = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise ModelProtocolError(f"a choice is not an object in chunk {_quote(json.dumps(chunk))}")
            if choice.get("finish_reason"):
                self._finished = True
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                deltas.append(TextDelta(text))
            for position, fragment in enumerate(delta.get("tool_calls") or []):
                self._tool_fragment(position, fragment)
        return deltas

    def _tool_fragment(self, position: int, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise ModelProtocolError(f"a tool call delta is not an object: {_quote(json.dumps(fragment))}")
        # Servers that send each call whole may leave out the index: use its position.
        index = fragment.get("index", position)
        partial = self._calls.setdefault(index if isinstance(index, int) else position, _PartialCall())
        if fragment.get("id") and not partial.id:
            partial.id = str(fragment["id"])
        function = fragment.get("function") or {}
        if isinstance(function.get("name"), str):
            partial.name += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            partial.arguments += arguments
        elif isinstance(arguments, dict):
            # A few servers send the arguments already parsed.
            partial.arguments += json.dumps(arguments)


def parse_arguments(text: str) -> Any:
    """The arguments a model wrote: parsed JSON, ``{}`` for none, the text itself if not JSON."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- errors -----------------------------------------------------------------------------


@contextlib.contextmanager
def _map_exceptions(url: str, timeout_s: float, connect_s: float) -> Iterator[None]:
    """httpx's exceptions as ours (httpcore ``map_exceptions``); their text never holds headers."""
    import httpx

    try:
        yield
    except httpx.ConnectTimeout:
        raise ModelTimeout(
            f"could not connect to {url} within {connect_s:g}s (connect_timeout)", connecting=True
        ) from None
    except httpx.TimeoutException as exc:
        what = "no data" if isinstance(exc, httpx.ReadTimeout) else "no progress"
        raise ModelTimeout(f"{what} from {url} within {timeout_s:g}s (timeout)") from None
    except httpx.ConnectError as exc:
        raise ModelUnavailable(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ModelUnavailable(f"cannot use base_url {url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise ModelError(f"the connection to {url} failed: {exc or type(exc).__name__}") from None


async def _status_error(
    response: httpx.Response, url: str, key_env: str, key: str | None
) -> ModelHTTPError:
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= _MAX_ERROR_BODY_BYTES:
            break
    text = body[:_MAX_ERROR_BODY_BYTES].decode("utf-8", "replace")
    try:
        detail = _message_of(json.loads(text))
    except ValueError:
        detail = text
    if key:
        detail = detail.replace(key, "***")
    status = f"{response.status_code} {response.reason_phrase}".strip()
    message = f"HTTP {status} from {url}"
    if detail.strip():
        message += f": {_quote(detail)}"
    if response.status_code in (401, 403):
        message += (
            f" (the API key comes from ${key_env})" if key else f" (${key_env} is not set: no API key was sent)"
        )
    return ModelHTTPError(message, response.status_code, parse_retry_after(response.headers.get("retry-after")))


def _message_of(detail: Any) -> str:
    """The human part of an error body: OpenAI's ``{"error": {"message"}}`` and its cousins."""
    for _ in range(3):
        if isinstance(detail, dict):
            for name in ("error", "message", "detail"):
                if detail.get(name):
                    detail = detail[name]
                    break
            else:
                break
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, default=str)


def _quote(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= _MAX_QUOTED_CHARS else text[: _MAX_QUOTED_CHARS - 1] + "…"


def _shown(url: str) -> str:
    """The URL for messages: no user info, no query (either could hold a credential)."""
    import httpx

    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return url.split("?", 1)[0].rsplit("@", 1)[-1]


# --- the provider, registered (engine/config/model_providers.py) -----------------------

SCHEMA: Mapping[str, Any] = {
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "Model name sent to the endpoint."},
        "base_url": {"type": "string", "format": "uri",
                     "description": "Endpoint base URL. Default: https://api.openai.com/v1."},
        "api_key_env": {"type": "string",
                        "description": "Environment variable holding the API key. Default: OPENAI_API_KEY."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "description": "Default: 0."},
        "timeout": {"$ref": "common.json#/$defs/duration", "description": "Longest wait for the next data of an "
                    "answer (not for the whole answer). Default: 60s."},
        "connect_timeout": {"$ref": "common.json#/$defs/duration",
                            "description": "Longest wait to connect. Default: 10s."},
        "request_timeout": {"$ref": "common.json#/$defs/duration",
                            "description": "Former name of timeout, still accepted; when set it wins. Default: unset."},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10, "description": "Further attempts after a "
                    "connection error, a connect timeout or HTTP 408/429/5xx, made only before any of the answer "
                    "was passed on. Default: 2."},
        "retry_backoff": {"$ref": "common.json#/$defs/duration",
                          "description": "First wait between attempts, doubled each time, with jitter. "
                          "Default: 500ms."},
        "retry_max_wait": {"$ref": "common.json#/$defs/duration",
                           "description": "Cap on any wait between attempts, Retry-After included. Default: 30s."},
        "stream": {"type": "boolean",
                   "description": "Stream the answer (server-sent events) or ask for it whole. Default: true."},
    },
}

PROVIDER = register(ModelProvider(
    name="openai", config_class=OpenAIModel, schema=SCHEMA, model=OpenAIProvider,
    summary="openai (an OpenAI-compatible endpoint)",
))
