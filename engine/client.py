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

Resource handling: the reader lives in the nursery of :func:`open_client`;
leaving the ``async with`` closes the connection and stops it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

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
    OfferedTool,
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


class ServerError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, frame: ErrorFrame) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.code = str(frame.code)
        self.message = frame.message
        self.frame = frame


class ClientClosed(Exception):
    """The connection ended while a request or an event was awaited."""


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


Approve = Callable[[AgentAction], bool | Awaitable[bool]]


@attrs.define(eq=False)
class Client:
    ws: WebSocketConnection
    _events_send: trio.MemorySendChannel[ServerFrame]
    _events: trio.MemoryReceiveChannel[ServerFrame]
    _waiting: dict[str, trio.MemorySendChannel[ServerFrame]] = attrs.field(factory=dict)
    closed: bool = False

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

    async def answer(self, action_id: str, approved: bool, reason: str | None = None) -> str:
        return await self.send(ActionApproval(id=new_id(), action_id=action_id, approved=approved, reason=reason))

    async def send_result(self, action_id: str, status: str, output: Any, session_id: str | None = None) -> str:
        return await self.send(
            ClientAgentResult(id=new_id(), action_id=action_id, status=status, output=output, session_id=session_id)  # type: ignore[arg-type]
        )

    async def call_tool(self, name: str, arguments: dict[str, Any], *, approve: Approve | None = None) -> AgentResult:
        """Call a tool directly; when the server asks for this client's approval, ``approve`` answers."""
        frame = ToolCall(id=new_id(), name=name, arguments=arguments)
        async with self._answers(frame) as answers:
            while True:
                reply = await self._next_answer(answers)
                if isinstance(reply, AgentResult):
                    return reply
                if isinstance(reply, AgentAction) and reply.requires_approval and str(reply.approver) == "user":
                    verdict = approve(reply) if approve else False
                    if inspect.isawaitable(verdict):
                        verdict = await verdict
                    await self.answer(reply.action_id, bool(verdict))

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
                    verdict = approve(event) if approve else False
                    if inspect.isawaitable(verdict):
                        verdict = await verdict
                    await self.answer(event.action_id, bool(verdict))
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


@asynccontextmanager
async def open_client(
    url: str, token: str | None, *, in_query: bool = False, event_buffer: int = 1024,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> AsyncIterator[Client]:
    """Connect, authenticate with ``token`` (header, or ``token`` query parameter), and read.

    Raises ``trio_websocket.ConnectionRejected`` (``.status_code`` 401) when the token is refused.
    """
    headers: list[tuple[str, str]] = list(extra_headers)
    if token is not None and in_query:
        url += ("&" if "?" in url else "?") + f"token={token}"
    elif token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    async with open_websocket_url(url, extra_headers=headers, connect_timeout=10) as ws:
        send, receive = trio.open_memory_channel[ServerFrame](event_buffer)
        client = Client(ws, send, receive)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
