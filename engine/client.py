"""A Trio client for the Scalytics Connect protocol: what the tests, ``sconnect chat`` and the
README's examples use.

::

    async with open_client(url, token) as client:
        state = await client.start_session("assistant")
        turn = await client.converse(state.session_id, "what is 17*23",
                                     approve=lambda action: True)
        print(turn.response.content)

One reader task decodes every server frame (validated against the protocol
schema).  A frame answering a request this client is waiting on (its
``reply_to``) goes to that request; every other frame is an event, read with
:meth:`Client.next_event` or :meth:`Client.events`.  Errors answering a request
raise :class:`ServerError`.

Connecting names what went wrong, as one of::

    ClientError
    ├── CannotConnect         the server could not be reached (.url, .reason)
    │   ├── ConnectTimeout    no answer within connect_timeout_s (TCP, TLS or HTTP step)
    │   └── TLSFailed         certificate not trusted, wrong host name, not TLS at all
    ├── Refused               the handshake got an HTTP status (.status_code, .reason, .body)
    │   └── TokenRefused      401: the server's reason (expired, bad signature, ...) in .reason
    ├── ServerError           an ``error`` frame answering a request (.code, .message)
    └── ClientClosed          the connection ended while something was awaited (.reason)

``Refused`` is also a ``trio_websocket.ConnectionRejected``.  ``wss://`` URLs are
verified against the system's trust store, or against ``cacert`` (a PEM file) or
an ``ssl_context`` of the caller's.

Keepalive: with ``keepalive_s``, the client pings the server that often; a ping
not answered within ``keepalive_s`` means the connection is dead (whatever TCP
thinks), and the client ends it: waiters and :meth:`Client.next_event` get
:class:`ClientClosed`.

Resource handling: the reader (and the keepalive) live in the nursery of
:func:`open_client`; leaving the ``async with`` closes the connection (bounded
in time, so a dead peer cannot hold the caller) and stops them.
"""

from __future__ import annotations

import inspect
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .protocol import (
    ActionApproval,
    ActionList,
    ActionListRequest,
    AgentAction,
    AgentConnect,
    AgentControl,
    AgentResponse,
    AgentResult,
    AgentState,
    ClientAgentResult,
    ClientFrame,
    ClientToolList,
    ErrorFrame,
    GrantList,
    GrantListRequest,
    GrantRevoke,
    GrantRevoked,
    OfferedTool,
    Remember,
    ResourceRequest,
    ResourceResponse,
    ResponseToken,
    ServerFrame,
    ToolCall,
    ToolList,
    UserMessage,
    decode_server,
    encode,
    new_id,
)


class ClientError(Exception):
    """Root of the client's errors."""


class CannotConnect(ClientError):
    """The server could not be reached; ``reason`` says why in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class ConnectTimeout(CannotConnect):
    """No answer within the connect timeout."""


class TLSFailed(CannotConnect):
    """The TLS handshake failed: an untrusted certificate, a wrong host name, or no TLS at all."""


class Refused(ClientError, ConnectionRejected):
    """The server answered the handshake with an HTTP error; ``reason`` is its message."""

    def __init__(self, status_code: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes | None) -> None:
        ConnectionRejected.__init__(self, status_code, headers, body)
        self.reason = _body_message(body)

    def __str__(self) -> str:
        return f"HTTP {self.status_code}" + (f": {self.reason}" if self.reason else "")


class TokenRefused(Refused):
    """401: the server refused the token; ``reason`` says why (expired, bad signature, ...)."""


class ServerError(ClientError):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, frame: ErrorFrame) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.code = str(frame.code)
        self.message = frame.message
        self.frame = frame


class ClientClosed(ClientError):
    """The connection ended while a request or an event was awaited."""


def _body_message(body: bytes | None) -> str:
    """The ``message`` of the server's JSON refusal body, else the body as text."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return (body or b"").decode("utf-8", "replace").strip()
    return str(data.get("message", "")) if isinstance(data, dict) else ""


@attrs.frozen
class Turn:
    """Everything one ``user_message`` produced, in order."""

    tokens: tuple[str, ...]
    actions: tuple[AgentAction, ...]
    results: tuple[AgentResult, ...]
    response: AgentResponse

    @property
    def text(self) -> str:
        return "".join(self.tokens)


# An approver's answer: True/False, or a Remember to approve and remember the approval as a grant.
Verdict = bool | Remember
Approve = Callable[[AgentAction], Verdict | Awaitable[Verdict]]


@attrs.define(eq=False)
class Client:
    ws: WebSocketConnection
    _events_send: trio.MemorySendChannel[ServerFrame]
    _events: trio.MemoryReceiveChannel[ServerFrame]
    _waiting: dict[str, trio.MemorySendChannel[ServerFrame]] = attrs.field(factory=dict)
    closed: bool = False
    # Why the client itself ended the connection (a ping went unanswered); None otherwise.
    lost_reason: str | None = None
    _reader_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code, once closed by either side (None: lost without a close)."""
        closed = self.ws.closed
        return None if closed is None or self.lost_reason else closed.code

    @property
    def close_reason(self) -> str:
        """Why the connection ended, in words ("" while it is open)."""
        if self.lost_reason:
            return self.lost_reason
        closed = self.ws.closed
        if closed is None:
            return ""
        return f"code {closed.code}" + (f": {closed.reason}" if closed.reason else "")

    # --- low level ----------------------------------------------------------------------

    async def send(self, frame: ClientFrame) -> str:
        """Send one frame; returns its id."""
        await self.ws.send_message(encode(frame))
        return frame.id

    async def send_raw(self, text: str | bytes) -> None:
        """Send anything at all (for trying the server's handling of bad frames)."""
        await self.ws.send_message(text)

    @asynccontextmanager
    async def _answers(self, frame: ClientFrame) -> AsyncIterator[trio.MemoryReceiveChannel[ServerFrame]]:
        """Send ``frame``; the channel yields every frame that names it in ``reply_to``."""
        send, receive = trio.open_memory_channel[ServerFrame](8)
        self._waiting[frame.id] = send
        try:
            await self.send(frame)
            yield receive
        finally:
            self._waiting.pop(frame.id, None)

    @staticmethod
    async def _next_answer(receive: trio.MemoryReceiveChannel[ServerFrame]) -> ServerFrame:
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ClientClosed("the connection closed before the reply arrived") from None
        if isinstance(reply, ErrorFrame):
            raise ServerError(reply)
        return reply

    async def request(self, frame: ClientFrame) -> ServerFrame:
        """Send ``frame`` and wait for the frame that answers it; ``error`` raises ServerError."""
        async with self._answers(frame) as answers:
            while True:
                reply = await self._next_answer(answers)
                if not isinstance(reply, AgentAction | AgentResult):
                    return reply
                # A request on behalf of a session is also shown as an action: an event, not the reply.
                await self._events_send.send(reply)

    async def next_event(self) -> ServerFrame:
        """The next frame that answers no pending request (tokens, actions, results, ...)."""
        try:
            return await self._events.receive()
        except trio.EndOfChannel:
            raise ClientClosed("the connection is closed") from None

    async def next_event_of(self, *kinds: type[Any], session_id: str | None = None) -> Any:
        """The next event of one of ``kinds`` (of that session, when given); others are dropped."""
        while True:
            event = await self.next_event()
            if isinstance(event, kinds) and (session_id is None or getattr(event, "session_id", None) == session_id):
                return event

    async def events(self) -> AsyncIterator[ServerFrame]:
        while True:
            try:
                yield await self.next_event()
            except ClientClosed:
                return

    # --- the protocol -------------------------------------------------------------------

    async def start_session(self, agent: str) -> AgentState:
        return await self._expect(AgentConnect(id=new_id(), agent=agent), AgentState)

    async def resume_session(self, session_id: str, agent: str) -> AgentState:
        return await self._expect(AgentConnect(id=new_id(), agent=agent, session_id=session_id), AgentState)

    async def cancel_turn(self, session_id: str) -> AgentState:
        """Cancel the session's running turn; the answer is the session's state (``active``).

        ``ServerError`` ``invalid_state`` when no turn is running.
        """
        return await self.control(session_id, "cancel")

    async def control(self, session_id: str, command: str) -> AgentState:
        return await self._expect(AgentControl(id=new_id(), session_id=session_id, command=command), AgentState)  # type: ignore[arg-type]

    async def read_resource(self, uri: str, session_id: str | None = None) -> ResourceResponse:
        """Read a resource (on behalf of a session when given); refusals raise ServerError."""
        return await self._expect(ResourceRequest(id=new_id(), uri=uri, session_id=session_id), ResourceResponse)

    async def list_actions(self) -> ActionList:
        """The actions waiting for this caller's approval."""
        return await self._expect(ActionListRequest(id=new_id()), ActionList)

    async def list_tools(self) -> ToolList:
        return await self._expect(ClientToolList(id=new_id()), ToolList)

    async def offer_tools(self, tools: Iterable[OfferedTool]) -> None:
        await self.send(ClientToolList(id=new_id(), tools=tuple(tools)))

    async def send_message(self, session_id: str, content: str) -> str:
        return await self.send(UserMessage(id=new_id(), session_id=session_id, content=content))

    async def answer(
        self, action_id: str, approved: bool, reason: str | None = None, remember: Remember | None = None
    ) -> str:
        """Approve or deny; ``remember`` (with an approval) asks for a grant (README "Remembered approvals")."""
        return await self.send(
            ActionApproval(id=new_id(), action_id=action_id, approved=approved, reason=reason, remember=remember)
        )

    async def _verdict(self, action: AgentAction, approve: Approve | None) -> None:
        verdict = approve(action) if approve else False
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if isinstance(verdict, Remember):
            await self.answer(action.action_id, True, remember=verdict)
        else:
            await self.answer(action.action_id, bool(verdict))

    async def list_grants(self, session_id: str | None = None, *, all: bool = False) -> GrantList:
        """The grants this caller may see (an admin: everyone's); ended ones too with ``all``."""
        return await self._expect(GrantListRequest(id=new_id(), session_id=session_id, all=all or None), GrantList)

    async def revoke_grant(self, grant_id: str, reason: str | None = None) -> GrantRevoked:
        """End a grant now; ServerError ``not_found``/``forbidden``/``invalid_state`` otherwise."""
        return await self._expect(GrantRevoke(id=new_id(), grant_id=grant_id, reason=reason), GrantRevoked)

    async def send_result(self, action_id: str, status: str, output: Any, session_id: str | None = None) -> str:
        return await self.send(
            ClientAgentResult(id=new_id(), action_id=action_id, status=status, output=output, session_id=session_id)  # type: ignore[arg-type]
        )

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, approve: Approve | None = None, session_id: str | None = None
    ) -> AgentResult:
        """Call a tool directly (through ``session_id`` when given); when the server asks for this
        client's approval, ``approve`` answers."""
        frame = ToolCall(id=new_id(), name=name, arguments=arguments, session_id=session_id)
        async with self._answers(frame) as answers:
            while True:
                reply = await self._next_answer(answers)
                if isinstance(reply, AgentResult):
                    return reply
                if isinstance(reply, AgentAction) and reply.requires_approval and str(reply.approver) == "user":
                    await self._verdict(reply, approve)

    async def converse(self, session_id: str, content: str, *, approve: Approve | None = None) -> Turn:
        """Send a message and gather the turn until ``agent_response``.

        Each ``agent_action`` that needs this user's approval is answered with
        ``approve(action)`` (no callback: denied).
        """
        message_id = await self.send_message(session_id, content)
        tokens: list[str] = []
        actions: list[AgentAction] = []
        results: list[AgentResult] = []
        while True:
            event = await self.next_event()
            if getattr(event, "session_id", session_id) != session_id:
                continue
            if isinstance(event, ResponseToken):
                tokens.append(event.token)
            elif isinstance(event, AgentAction):
                actions.append(event)
                if event.requires_approval and str(event.approver) == "user":
                    await self._verdict(event, approve)
            elif isinstance(event, AgentResult):
                results.append(event)
            elif isinstance(event, AgentResponse):
                return Turn(tuple(tokens), tuple(actions), tuple(results), event)
            elif isinstance(event, ErrorFrame) and event.reply_to in (message_id, None):
                raise ServerError(event)

    async def _expect(self, frame: ClientFrame, kind: type[Any]) -> Any:
        reply = await self.request(frame)
        if not isinstance(reply, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(reply).__name__}")
        return reply

    # --- the reader ---------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            with self._reader_scope:
                while True:
                    try:
                        message = await self.ws.get_message()
                    except ConnectionClosed:
                        return
                    frame = decode_server(message)
                    reply_to = getattr(frame, "reply_to", None)
                    waiter = self._waiting.get(reply_to) if reply_to else None
                    if waiter is not None:
                        waiter.send_nowait(frame)
                    else:
                        await self._events_send.send(frame)
        finally:
            self.closed = True
            for waiter in self._waiting.values():
                waiter.close()
            await self._events_send.aclose()

    async def _keepalive(self, interval_s: float) -> None:
        """Ping every ``interval_s``; a ping unanswered for as long ends the connection."""
        while not self.closed:
            await trio.sleep(interval_s)
            with trio.move_on_after(interval_s) as scope:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                self.lost_reason = f"the server did not answer a ping within {interval_s:g}s"
                self._reader_scope.cancel()
                return


@asynccontextmanager
async def open_client(
    url: str,
    token: str | None,
    *,
    in_query: bool = False,
    event_buffer: int = 1024,
    cacert: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout_s: float = 10.0,
    keepalive_s: float | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> AsyncIterator[Client]:
    """Connect, authenticate with ``token`` (header, or ``token`` query parameter), and read.

    ``wss://`` is verified with ``ssl_context``, else the system's trust store plus
    ``cacert`` (a PEM file) when given.  Raises :class:`CannotConnect` (with
    :class:`ConnectTimeout` and :class:`TLSFailed`), :class:`TokenRefused` for a 401
    and :class:`Refused` for another HTTP status.
    """
    headers: list[tuple[bytes, bytes]] = [(name.encode(), value.encode()) for name, value in extra_headers]
    if token is not None and in_query:
        url += ("&" if "?" in url else "?") + f"token={quote(token, safe='')}"
    elif token is not None:
        headers.append((b"Authorization", f"Bearer {token}".encode()))
    context = _ssl_for(url, cacert, ssl_context)
    connected = False
    try:
        async with trio.open_nursery() as nursery:
            ws = await _connect(nursery, url, headers, connect_timeout_s, context)
            connected = True
            send, receive = trio.open_memory_channel[ServerFrame](event_buffer)
            client = Client(ws, send, receive)
            nursery.start_soon(client._read)
            if keepalive_s:
                nursery.start_soon(client._keepalive, keepalive_s)
            try:
                yield client
            finally:
                # A dead peer never answers the close handshake: give it a moment, no more.
                with trio.move_on_after(1, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # trio-websocket reports a refused handshake from its reader task, so it arrives in a
        # group: while connecting, raise the one named error bare.
        failure = None if connected else _connect_failure(group)
        if failure is None:
            raise
        raise failure from None


def _connect_failure(group: BaseExceptionGroup[BaseException]) -> ClientError | None:
    for leaf in _leaves(group):
        if isinstance(leaf, ClientError):
            return leaf
        if isinstance(leaf, ConnectionRejected):
            kind = TokenRefused if leaf.status_code == 401 else Refused
            return kind(leaf.status_code, leaf.headers, leaf.body)
    return None


def _leaves(error: BaseException) -> Iterable[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _ssl_for(url: str, cacert: str | None, context: ssl.SSLContext | None) -> ssl.SSLContext | None:
    if urlsplit(url).scheme != "wss":
        return None
    if context is not None:
        return context
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise CannotConnect(url, f"cannot load the CA certificate {cacert}: {exc}") from None


# The server's frames may be larger than the 1 MiB a client may send: a result's MCP content
# blocks hold up to 8 MiB of data (engine/protocol/content.py), ~11 MiB as base64.
MAX_SERVER_FRAME_BYTES = 16 * 2**20


async def _connect(
    nursery: trio.Nursery,
    url: str,
    headers: list[tuple[bytes, bytes]],
    timeout_s: float,
    context: ssl.SSLContext | None,
) -> WebSocketConnection:
    """TCP, then TLS, then the WebSocket handshake, each failure named (trio-websocket's own
    ``open_websocket_url`` turns a failed TLS handshake into a bare timeout)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise CannotConnect(url, "not a ws:// or wss:// URL")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise CannotConnect(url, "the port is not a number from 0 to 65535") from None
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    step = "connecting"
    try:
        with trio.fail_after(timeout_s):
            tcp = await trio.open_tcp_stream(host, port)
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
            if context is not None:
                step = "in the TLS handshake"
                stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
                await stream.do_handshake()
            step = "in the WebSocket handshake"
            return await wrap_client_stream(
                nursery, stream, host, resource, extra_headers=headers, max_message_size=MAX_SERVER_FRAME_BYTES
            )
    except trio.TooSlowError:
        hint = "; is it a wss:// server?" if context is None and step == "in the WebSocket handshake" else ""
        raise ConnectTimeout(url, f"no answer within {timeout_s:g}s ({step}{hint})") from None
    except ConnectionRejected as exc:
        kind = TokenRefused if exc.status_code == 401 else Refused
        raise kind(exc.status_code, exc.headers, exc.body) from None
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            raise TLSFailed(url, _tls_reason(cause)) from None
        if context is not None and step == "in the TLS handshake":
            raise TLSFailed(url, "the server closed the connection in the TLS handshake") from None
        raise CannotConnect(url, f"the connection broke {step}") from None
    except HandshakeError as exc:
        why = str(exc.__cause__ or exc.__context__ or exc) or type(exc).__name__
        hint = " (is it a wss:// server?)" if context is None else ""
        raise CannotConnect(url, f"the WebSocket handshake failed: {why}{hint}") from None
    except OSError as exc:
        raise CannotConnect(url, _os_reason(exc)) from None


def _os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than trio's "all attempts to connect ... failed" (whose
    per-address errors are its cause)."""
    causes = [leaf for leaf in _leaves(exc.__cause__) if isinstance(leaf, OSError)] if exc.__cause__ else []
    reasons = dict.fromkeys(leaf.strerror or str(leaf) for leaf in causes or [exc])
    return "; ".join(reasons)


def _tls_reason(exc: ssl.SSLError) -> str:
    """One line naming a TLS failure, with the fix where there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return f"TLS: the certificate is not for this host name ({detail})"
        return f"TLS: certificate verify failed ({detail}); pass its CA with --cacert FILE"
    reason = exc.reason or str(exc)
    if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return f"TLS: the server does not speak TLS ({reason}); is it a ws:// URL?"
    return f"TLS: {reason}"
