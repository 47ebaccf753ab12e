"""One authenticated connection: its reader, its writer, and dispatch of frames.

Dispatch -- decoding a frame, routing it to its handler, encoding the replies -- runs
over any :class:`~engine.server.transport.Transport` (receive text, send text, ping,
close): the server's WebSocket (:mod:`engine.server.websocket`) or, in a test, a pair
of memory channels.  Nothing here imports trio-websocket.

Resource handling: the connection's writer and its direct tool calls live in
the connection's nursery; its sessions live in the hub's nursery (so that a
client that reconnects can take a live session over) and are detached when the
connection closes: their work is cancelled and their tools killed before the
handler returns.

Error handling: a frame that cannot be decoded or acted on gets one ``error``
frame and the connection carries on; an unexpected exception in a handler is
logged and reported as ``internal`` to that client only.  Frames are encoded
when queued: one that cannot be encoded (a value nested too deep for the
encoder) becomes an ``internal`` error for that frame, never the end of the
connection.  Outgoing frames go through a bounded queue (:class:`Outbox`): a
client that stops reading is cut off when it fills (or when one send takes
longer than ``send_timeout_s``) instead of stalling anybody else.

Rate limiting: a token bucket per connection, refilled over time *and* by every
reply written to the client (one token for the first reply to each request; a
``user_message``'s reply is its turn's ``agent_response``).  A
client that waits for its answers before sending more -- any sequential
request/response client, however fast -- therefore never runs dry; a client that
sends without waiting does, and then gets one ``rate_limited`` notice, ahead of
its queued replies, for each run of dropped frames.

Liveness: a connection is idle, and closed after ``idle_timeout_s``, only when
it neither sends frames nor answers the keepalive pings; a client that is
connected and answering pings (a chat waiting for its user, an admin waiting
for approvals) stays.  Its timers (the next ping, the idle deadline, the token's
expiry) are kept by one server-wide timer (:mod:`.liveness`), not by tasks of its
own: an idle connection holds no task but its reader and trio-websocket's.  Its
writer task, too, runs only while there is something to send; a direct tool call's
``agent_result`` is written by the call's own task as it ends (no writer started for it).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from .. import tracing
from ..audit import AuditWriteError
from ..auth import Principal
from ..decision import decide
from ..memory import frames as learning
from ..protocol import (
    ActionApproval,
    ActionList,
    ActionListRequest,
    AgentConnect,
    AgentControl,
    AgentResponse,
    AgentResult,
    Approver,
    ClientAgentResult,
    ClientToolList,
    ErrorCode,
    ErrorFrame,
    Feedback,
    GrantListRequest,
    GrantRevoke,
    LifecycleState,
    MemoryForget,
    MemoryListRequest,
    OfferedTool,
    PendingActionInfo,
    ProtocolError,
    ResourceInfo,
    ResourceList,
    ResourceListRequest,
    ResourceRequest,
    ResourceResponse,
    ServerFrame,
    ToolCall,
    ToolInfo,
    ToolList,
    UserMessage,
    decode,
    encode,
    error_frame,
    new_id,
)
from ..store import StoreUnavailableError
from ..suggest import unknown_name
from . import argcheck, grants, liveness
from .actions import Caller, Snapshot, perform, read
from .hub import Hub
from .outbox import Outbox
from .session import Session
from .transport import Transport, TransportClosed

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOKEN_EXPIRED = 4001
CLOSE_IDLE = 4002
CLOSE_NO_PONG = 4003
CLOSE_TOO_SLOW = 4008

# The audit context of a connection that adds nothing to its records: one shared, read-only.
NO_AUDIT_CONTEXT: Mapping[str, Any] = MappingProxyType({})

# Connection._writer_state
_IDLE, _WRITING, _BROKEN = 0, 1, 2

# The request a handler task started by Connection._guarded answers, and that task: the
# last frame of its answer (a direct tool call's agent_result) is written by that task
# itself as its handler returns, not by a writer task started for it (see Connection.send).
_ANSWERING: contextvars.ContextVar[tuple[str, trio.lowlevel.Task] | None] = contextvars.ContextVar(
    "sconnect_answering", default=None
)


@attrs.define
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; remembers how long frames have been dropped.

    A flood keeps getting the odd token as the bucket refills, so "flooding" is a run
    of drops without a quiet second between them, not an uninterrupted empty bucket.
    """

    rate: float
    burst: int
    tokens: float = attrs.field(init=False)
    updated: float = attrs.field(init=False, factory=trio.current_time)
    empty_since: float | None = attrs.field(init=False, default=None)
    last_drop: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self.tokens = float(self.burst)

    def refund(self) -> None:
        """One token back: a request was answered."""
        self.tokens = min(float(self.burst), self.tokens + 1)

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        if self.empty_since is None or now - self.last_drop > 1.0:
            self.empty_since = now
        self.last_drop = now
        return False

    def flooding_for(self) -> float:
        now = trio.current_time()
        if self.empty_since is None or now - self.last_drop > 1.0:
            return 0.0
        return now - self.empty_since


@attrs.define(eq=False)
class _ToolLists:
    """The tools each subject and roles may see under one configuration, decided once.

    Listing decides every tool (the policy engine, per tool) and a tool list is sent on
    every connect, reload and ``tool_list`` request; the answer depends only on the
    configuration, the subject and the roles (a listing has no arguments), so it is kept
    until the configuration object changes.  The same tuple then lets the codec reuse
    its JSON (engine.protocol._codec).
    """

    config: Any = None
    tools: dict[tuple[str, frozenset[str]], tuple[ToolInfo, ...]] = attrs.field(factory=dict)


_TOOL_LISTS_MAX = 4096
_tool_lists: weakref.WeakKeyDictionary[Hub, _ToolLists] = weakref.WeakKeyDictionary()


def _listed_tools(hub: Hub, principal: Principal) -> tuple[ToolInfo, ...]:
    config = hub.config
    lists = _tool_lists.get(hub)
    if lists is None:
        lists = _tool_lists[hub] = _ToolLists()
    if lists.config is not config or len(lists.tools) >= _TOOL_LISTS_MAX:
        lists.config, lists.tools = config, {}
    key = (principal.sub, principal.roles)
    tools = lists.tools.get(key)
    if tools is None:
        tools = lists.tools[key] = tuple(
            ToolInfo(name=t.name, description=t.description, parameters=dict(t.parameters), level=t.permission_level)
            for t in sorted(config.tools.values(), key=lambda t: t.name)
            if decide(config, principal.sub, principal.roles, "tool.call", t.name).effect != "deny"
        )
    return tools


@attrs.define(eq=False)
class Connection:
    hub: Hub
    transport: Transport
    principal: Principal
    client_tools: dict[str, OfferedTool] = attrs.field(factory=dict)
    client_results: dict[str, trio.MemorySendChannel[Any]] = attrs.field(factory=dict)
    # Nothing to add to audit records: the WebSocket is the default front door.
    audit_context: Mapping[str, Any] = NO_AUDIT_CONTEXT
    _outbox: Outbox | None = None
    _nursery: trio.Nursery | None = None
    _closing: bool = False
    _bucket: TokenBucket | None = None
    # Ids of requests taken from the bucket and not answered yet (insertion order; bounded).
    _unanswered: dict[str, None] = attrs.field(factory=dict)
    # The user_message each session's running turn answers: its agent_response carries no
    # reply_to on the wire, yet is that message's answer (its token comes back). Made on
    # first use: most connections never send one.
    _turn_asks: dict[str, str] | None = None
    # When the client last showed it is there: a frame, or a pong (trio clock).
    _last_alive: float = attrs.field(factory=trio.current_time)
    # The liveness timer's schedule (trio clock): next ping, token expiry; a ping in flight.
    _next_ping: float = 0.0
    _expires: float = 0.0
    _pinging: bool = False
    # The writer task: _IDLE (none running), _WRITING, or _BROKEN (a send failed: none ever again).
    _writer_state: int = 0
    _done: bool = False

    @property
    def slot_key(self) -> str:
        return f"conn:{id(self)}"

    async def serve(self) -> None:
        """Run until the client leaves, the token expires, or the client falls behind."""
        settings = self.hub.settings
        outbox = self._outbox = Outbox(settings.send_queue_frames)
        self._bucket = TokenBucket(settings.frames_per_second, settings.frame_burst)
        now = trio.current_time()
        self._last_alive = now
        self._next_ping = now + settings.ping_interval_s
        self._expires = now + max(0.0, self.principal.expires_at - time.time())
        self.hub.connections.add(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                liveness.watch(self.hub, self, self._next_look())
                self.send(self.tool_list())
                for pending in self.hub.approvals.waiting_for(self.principal.sub, self.principal.roles):
                    self.send(pending.frame)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            self._done = True
            self._nursery = None  # closed: what is sent from now on is flushed below
            self.hub.connections.discard(self)
            self.hub.run_slots.pop(self.slot_key, None)
            with trio.move_on_after(5, shield=True):
                for session in [s for s in self.hub.sessions.values() if s.conn is self]:
                    await session.detach()
            outbox.close()
            with trio.move_on_after(0.5, shield=True):
                await self._flush(outbox)
            with trio.move_on_after(0.5, shield=True):
                if self.hub.shutting_down:
                    await self.transport.close(1001, "server shutting down")
                else:
                    await self.transport.close()

    async def _flush(self, outbox: Outbox) -> None:
        """Send what is still queued (cancelled results, a shutdown notice) before closing."""
        while True:
            try:
                text, _reply_to = outbox.get_nowait()
                await self.transport.send(text)
            except (trio.WouldBlock, trio.ClosedResourceError, TransportClosed):
                return

    def send(self, frame: ServerFrame, *, control: bool = False) -> None:
        """Encode and queue a frame; a full queue means the client stopped reading: cut it off.

        ``control``: a notice that stands alone (rate limiting, shutdown), sent ahead of
        the queued replies and dropped rather than queued when its small lane is full.
        """
        if self._outbox is None or self._outbox.closed:
            return
        reply_to = getattr(frame, "reply_to", None)
        answered = reply_to
        if type(frame) is AgentResponse and self._turn_asks:
            answered = self._turn_asks.pop(frame.session_id, None)
        try:
            text = encode(frame)
        except (ValueError, TypeError, RecursionError) as exc:
            # This frame only: the client hears why it will not get it, the connection goes on.
            log.error("a %s frame for %s could not be encoded (%s): sending an error instead",
                      frame.TYPE, self.principal.sub, type(exc).__name__)
            frame = ErrorFrame(
                code=ErrorCode.INTERNAL, reply_to=reply_to,
                message=f"a {frame.TYPE} frame for you could not be encoded (a value too deep or not JSON); "
                "it was dropped: see the server log",
            )
            text = encode(frame)
        if isinstance(frame, ErrorFrame):
            self.hub.metrics.errors_total.inc(code=str(frame.code))
        if self._outbox.put(text, answered, control=control):
            if type(frame) is AgentResult and self._writer_state == _IDLE and self._answers_here(frame.reply_to):
                return  # its own handler task writes it once the handler returns (_guarded), no task started
            if self._writer_state == _IDLE and self._nursery is not None:
                try:
                    self._nursery.start_soon(self._writer, self._outbox)
                    self._writer_state = _WRITING
                except RuntimeError:
                    pass  # the connection's nursery has just closed: serve() flushes the outbox
            return
        if control:
            return
        if not self._closing:
            log.warning("%s is not reading: its send queue is full; closing", self.principal.sub)
        self._close_soon(CLOSE_TOO_SLOW, "send queue full: the client is not reading")

    # --- tasks --------------------------------------------------------------------------

    async def _writer(self, outbox: Outbox) -> None:
        """Send what is queued, then end: :meth:`send` starts it again for the next frame.

        The outbox stays open when this task ends: the connection's last frames are flushed from it.
        """
        timeout = self.hub.settings.send_timeout_s
        try:
            # Started in a connection being cancelled (a result sent as its tool call is
            # cancelled): leave the frames queued, for serve() to flush, rather than take one
            # and lose it at the send's first checkpoint.
            await trio.lowlevel.checkpoint_if_cancelled()
            # One scope for the whole run, its deadline moved on before each send (cheaper
            # than a scope per frame); nothing but a send can be cancelled inside it.
            with trio.CancelScope() as scope:
                while True:
                    try:
                        text, reply_to = outbox.get_nowait()
                    except trio.WouldBlock:
                        return
                    scope.deadline = trio.current_time() + timeout
                    try:
                        await self.transport.send(text)
                    except TransportClosed:
                        self._writer_state = _BROKEN
                        self._stop()
                        return
                    self.hub.metrics.frames_out.inc()
                    if reply_to is not None and self._bucket is not None and \
                            self._unanswered.pop(reply_to, 0) is None:
                        # Answered and written: the request's token comes back (see the module docstring).
                        self._bucket.refund()
            if scope.cancelled_caught:
                # A cancelled send may have written half a frame: the connection is dead.
                self._writer_state = _BROKEN
                self._close_soon(CLOSE_TOO_SLOW, "the client is not reading")
        finally:
            if self._writer_state == _WRITING:
                self._writer_state = _IDLE

    def _next_look(self) -> float:
        settings = self.hub.settings
        return min(self._expires, self._last_alive + settings.idle_timeout_s, self._next_ping)

    def look(self, now: float) -> float | None:
        """The liveness timer's call (see :mod:`.liveness`): close, or ping, what is due at ``now``.

        A peer that does not answer a ping in time is gone, whatever TCP thinks; a pong
        counts as a sign of life for the idle timeout.
        """
        if self._done or self._closing or self._nursery is None:
            return None
        settings = self.hub.settings
        if now >= self._expires:
            self._close_soon(CLOSE_TOKEN_EXPIRED, "token expired")
            return None
        if now >= self._last_alive + settings.idle_timeout_s:
            self._close_soon(CLOSE_IDLE, f"idle for {settings.idle_timeout_s:g}s (no frames, no pongs)")
            return None
        if now >= self._next_ping:
            # While this ping waits for its pong, look again one interval on (the ping times itself out).
            self._next_ping = now + settings.ping_interval_s
            if not self._pinging:
                try:
                    self._nursery.start_soon(self._ping)
                except RuntimeError:
                    return None  # the connection's nursery has just closed: it is ending
                self._pinging = True
        return self._next_look()

    async def _ping(self) -> None:
        settings = self.hub.settings
        try:
            with trio.move_on_after(settings.ping_timeout_s) as scope:
                try:
                    await self.transport.ping()
                except TransportClosed:
                    return
            if scope.cancelled_caught:
                await self._close(CLOSE_NO_PONG, "no pong: the connection looks dead")
                return
            now = self._last_alive = trio.current_time()
            self._next_ping = now + settings.ping_interval_s
        finally:
            self._pinging = False

    async def _reader(self) -> None:
        settings = self.hub.settings
        bucket = self._bucket
        assert bucket is not None
        while True:
            # No deadline here: the liveness timer closes an idle connection (see look()).
            try:
                message = await self.transport.receive()
            except TransportClosed:
                return
            self._last_alive = trio.current_time()
            self.hub.metrics.frames_in.inc()
            if not bucket.take():
                if bucket.flooding_for() > settings.flood_close_s:
                    await self._close(CLOSE_POLICY, "too many frames: rate limit exceeded", after_notices=True)
                    return
                self._rate_limited()
                continue
            if isinstance(message, bytes):
                binary = "binary frames are not supported: send JSON as text"
                self.send(ErrorFrame(code=ErrorCode.BAD_JSON, message=binary))
                continue
            try:
                frame = decode(message)
            except ProtocolError as exc:
                self.send(error_frame(exc))
                continue
            self._count_unanswered(frame.id)
            await self._dispatch(frame)

    def _rate_limited(self) -> None:
        """Tell a client whose frames are being dropped, once per notice it has not received yet."""
        if self._outbox is None or self._outbox.control_pending:
            return
        settings = self.hub.settings
        self.send(
            ErrorFrame(
                code=ErrorCode.RATE_LIMITED,
                message=f"frames dropped: more than {settings.frame_burst} requests without waiting for their answers, "
                f"and more than {settings.frames_per_second:g} a second; wait for answers before sending more",
            ),
            control=True,
        )

    def _asked(self, session_id: str, frame_id: str) -> None:
        """Remember which message the session's turn answers (bounded like `_unanswered`)."""
        if self._turn_asks is None:
            self._turn_asks = {}
        self._turn_asks[session_id] = frame_id
        if len(self._turn_asks) > self.hub.settings.frame_burst:
            del self._turn_asks[next(iter(self._turn_asks))]

    def _count_unanswered(self, frame_id: str) -> None:
        self._unanswered[frame_id] = None
        if len(self._unanswered) > self.hub.settings.frame_burst:
            # Requests that will never be answered (an offer, an approval): their tokens refill over time.
            del self._unanswered[next(iter(self._unanswered))]

    # --- dispatch -----------------------------------------------------------------------

    async def _dispatch(self, frame: Any) -> None:
        if not tracing.enabled():
            await self._route(frame)  # no span: two context managers per frame saved
            return
        # A span per frame; a frame's own traceparent continues the caller's trace for
        # what it starts (a turn, a tool call: their tasks inherit this context).
        traceparent = getattr(frame, "traceparent", None)
        with tracing.continued([(b"traceparent", traceparent.encode())] if traceparent else []), \
                tracing.span("sconnect.frame", type=frame.TYPE, frame_id=frame.id, subject=self.principal.sub):
            await self._route(frame)

    async def _route(self, frame: Any) -> None:
        try:
            match frame:
                # The most frequent frame first: a match tries its cases in order.
                case ToolCall():
                    assert self._nursery is not None
                    self._nursery.start_soon(self._guarded, self._tool_call, frame)
                case AgentConnect():
                    await self._agent_connect(frame)
                case UserMessage():
                    self._check_message_size(frame)
                    await (await self._session(frame.session_id, frame.id)).message(frame.content, frame.id)
                    self._asked(frame.session_id, frame.id)
                case AgentControl():
                    # A session live on another instance (PostgreSQL): that instance runs the control.
                    if frame.session_id in self.hub.sessions or not await self.hub.approval_bus.forward_control(
                            self, frame):
                        await (await self._session(frame.session_id, frame.id)).control(str(frame.command), frame.id)
                case ActionApproval():
                    await self.hub.approval_bus.answer(
                        self.hub,
                        frame.action_id,
                        frame.approved,
                        self.principal.sub,
                        self.principal.roles,
                        frame.reason,
                        frame.id,
                        remember=frame.remember,
                    )
                case GrantListRequest():
                    self.send(await grants.list_grants(self.hub, self.principal, frame))
                case GrantRevoke():
                    self.send(await grants.revoke(self.hub, self.principal, frame, self.audit_context))
                case ClientAgentResult():
                    waiter = self.client_results.get(frame.action_id)
                    if waiter is None:
                        raise ProtocolError(
                            ErrorCode.NOT_FOUND,
                            f"no client-run action {frame.action_id!r} is waiting",
                            reply_to=frame.id,
                        )
                    waiter.send_nowait(frame)
                case ClientToolList():
                    if frame.tools is None:
                        self.send(self.tool_list(reply_to=frame.id))
                    else:
                        self.client_tools = await self._checked_offer(frame)
                case ResourceRequest():
                    assert self._nursery is not None
                    self._nursery.start_soon(self._guarded, self._resource_request, frame)
                case ResourceListRequest():
                    self.send(self._resource_list(frame.id))
                case ActionListRequest():
                    self.send(self._action_list(frame.id))
                case MemoryListRequest():
                    await learning.memory_list(self, frame)
                case MemoryForget():
                    await learning.memory_forget(self, frame)
                case Feedback():
                    await learning.feedback(self, frame)
        except trio.WouldBlock:
            self.send(
                ErrorFrame(
                    code=ErrorCode.ALREADY_DECIDED,
                    message="a result for this action was already sent",
                    reply_to=frame.id,
                )
            )
        except Exception as exc:
            self._frame_failed(frame, exc)

    def _frame_failed(self, frame: Any, exc: Exception) -> None:
        """A handler's failure is this frame's error, never the connection's end."""
        if isinstance(exc, ProtocolError):
            self.send(error_frame(exc if exc.reply_to else exc.replying_to(frame.id)))
        elif isinstance(exc, StoreUnavailableError):
            log.warning("%s refused: %s", type(frame).__name__, exc)
            self.send(ErrorFrame(
                code=ErrorCode.UNAVAILABLE, message="the database is unavailable; try again shortly", reply_to=frame.id
            ))
        elif isinstance(exc, AuditWriteError):
            # Nothing runs unrecorded: the audit log could not commit (its database away, a disk full).
            log.warning("%s refused: %s", type(frame).__name__, exc)
            self.send(ErrorFrame(
                code=ErrorCode.UNAVAILABLE, message="the audit log cannot record right now, so nothing was done; "
                "try again shortly", reply_to=frame.id,
            ))
        else:
            log.error("handler failed", exc_info=exc, extra={"type": type(frame).__name__})
            self.send(
                ErrorFrame(code=ErrorCode.INTERNAL, message="internal error; see the server log", reply_to=frame.id)
            )

    async def _guarded(self, handler: Any, frame: Any) -> None:
        """Run a handler as its own task; its failure is this frame's error, not the connection's.

        The handler's final ``agent_result`` was queued without starting a writer (see
        :meth:`send`): this task writes what is queued itself, saving the answer a task
        start and a trip through the scheduler. Cancelled first (the connection is
        closing), it leaves the frames queued for :meth:`serve` to flush.
        """
        with self.hub.call_in_flight():
            _ANSWERING.set((frame.id, trio.lowlevel.current_task()))
            try:
                await handler(frame)
            except Exception as exc:
                self._frame_failed(frame, exc)
            if self._writer_state == _IDLE and self._outbox is not None and self._outbox.pending:
                self._writer_state = _WRITING
                await self._writer(self._outbox)

    @staticmethod
    def _answers_here(reply_to: str | None) -> bool:
        """Whether the running task is the handler task answering ``reply_to`` (and will write it)."""
        answering = _ANSWERING.get()
        return answering is not None and answering[0] == reply_to and answering[1] is trio.lowlevel.current_task()

    async def _agent_connect(self, frame: AgentConnect) -> None:
        hub = self.hub
        if frame.session_id is None:
            agent = hub.config.agents.get(frame.agent)
            if agent is None:
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, unknown_name("agent", frame.agent, hub.config.agents), reply_to=frame.id
                )
            self._check_session_room(frame.id)
            session_id = new_id()
            await hub.store.create_session(session_id, self.principal.sub, agent.name)
            session = Session(session_id, agent, self, LifecycleState.INITIALIZED, [])
            await self._start(session, frame.id)
            await session.open(frame.id)
            return
        live = self._live(frame.session_id)
        if live is not None and live.ending:
            # Still winding down on the connection it lost (a quick reconnect): taking it over now
            # would lose it when it leaves the hub; let it end, then resume it from the store.
            await live.wait_ended()
            live = None
        record = await hub.store.get_session(frame.session_id)
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {frame.session_id!r}", reply_to=frame.id)
        if record.subject != self.principal.sub:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this session belongs to another subject", reply_to=frame.id)
        if record.agent != frame.agent:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"session {frame.session_id!r} is not a session of agent {frame.agent!r}",
                reply_to=frame.id,
            )
        if live is not None:
            # Still running on another connection of the same subject: follow it here.
            live.follow(self, frame.id)
            for pending in list(hub.approvals.pending.values()):
                if pending.frame.session_id == live.session_id:
                    self.send(pending.frame)
            return
        state = LifecycleState(record.state)
        if state == LifecycleState.TERMINATED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "this session has terminated", reply_to=frame.id)
        agent = hub.config.agents.get(record.agent)
        if agent is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"the session's agent {record.agent!r} no longer exists", reply_to=frame.id
            )
        if state in (LifecycleState.PROCESSING, LifecycleState.TOOL_USE, LifecycleState.INITIALIZED):
            state = LifecycleState.ACTIVE
        self._check_session_room(frame.id)
        history = list(await hub.store.messages(frame.session_id))
        session = Session(frame.session_id, agent, self, state, history)
        await self._start(session, frame.id)
        await session.open(frame.id)

    def _check_session_room(self, reply_to: str) -> None:
        limit = self.hub.settings.max_sessions_per_subject
        live = sum(1 for s in self.hub.sessions.values() if s.conn.principal.sub == self.principal.sub) + \
            self.hub.approval_bus.remote_sessions(self.principal.sub)
        if live >= limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"{self.principal.sub} already has {live} live sessions, the maximum (limit sessions_per_subject): "
                "stop one (agent_control stop) or close the connection that holds it",
                reply_to=reply_to,
                details={"limit": "sessions_per_subject", "maximum": limit},
            )

    def _check_message_size(self, frame: UserMessage) -> None:
        limit = self.hub.settings.max_user_message_bytes
        # Characters first (free); UTF-8 bytes only when the text could be too long.
        if len(frame.content) * 4 > limit and len(frame.content.encode("utf-8", "surrogatepass")) > limit:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"the message is longer than {limit} bytes (limit user_message)",
                reply_to=frame.id,
                details={"path": "$.payload.content", "maximum": limit},
            )

    async def _start(self, session: Session, reply_to: str) -> None:
        assert self.hub.nursery is not None
        # Checked again with no await before the insertion: concurrent connects cannot overshoot.
        self._check_session_room(reply_to)
        self.hub.sessions[session.session_id] = session
        await self.hub.nursery.start(session.run)

    def _live(self, session_id: str) -> Session | None:
        """The live session ``session_id``: the hub holds them as :class:`~.hub.LiveSession`,
        and every one of them is a :class:`Session` this module put there (``_start``)."""
        session = self.hub.sessions.get(session_id)
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"the hub holds a {type(session).__name__} as session {session_id!r}")
        return session

    async def _session(self, session_id: str, reply_to: str) -> Session:
        session = self._live(session_id)
        if session is not None and session.conn is self:
            return session
        owner = session.conn.principal.sub if session is not None else None
        if owner is None:
            record = await self.hub.store.get_session(session_id)
            owner = record.subject if record is not None else None
        if owner is not None and owner != self.principal.sub:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this session belongs to another subject", reply_to=reply_to)
        hint = " (send agent_connect with its session_id to resume it here)" if owner else ""
        raise ProtocolError(
            ErrorCode.NOT_FOUND, f"no session {session_id!r} on this connection{hint}", reply_to=reply_to
        )

    async def _tool_call(self, frame: ToolCall) -> None:
        if frame.name not in self.hub.config.tools and frame.name not in self.client_tools:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool named {frame.name!r}", reply_to=frame.id)
        timeout = self.hub.settings.approval_timeout_s
        if frame.session_id is not None:
            session = await self._session(frame.session_id, frame.id)
            timeout = float(session.agent.approval_timeout)
        agent = session.agent.name if frame.session_id is not None else None
        # The configuration in force now, as perform() would take it (no await between): made
        # here, the caller is built once instead of twice (perform's pinned() evolves one without).
        caller = Caller(self, frame.session_id, agent, timeout, reply_to=frame.id, snapshot=Snapshot.of(self.hub))
        await perform(caller, frame.name, frame.arguments)

    async def _resource_request(self, frame: ResourceRequest) -> None:
        caller = Caller(self, None, None, self.hub.settings.approval_timeout_s, reply_to=frame.id)
        if frame.session_id is not None:
            session = await self._session(frame.session_id, frame.id)
            caller = Caller(
                self,
                session.session_id,
                session.agent.name,
                float(session.agent.approval_timeout),
                reply_to=frame.id,
                agent_resources=tuple(session.agent.resources),
            )
        outcome, content = await read(caller, frame.uri)
        if content is None:
            code = outcome.output.get("code") if isinstance(outcome.output, dict) else None
            if code is None:
                code = {"denied": "forbidden", "timeout": "timeout"}.get(str(outcome.status), "internal")
            raise ProtocolError(ErrorCode(code), outcome.reason or str(outcome.status), reply_to=frame.id)
        self.send(
            ResourceResponse.of(
                uri=content.uri,
                mime_type=content.mime_type,
                data=content.data,
                truncated=content.truncated,
                reply_to=frame.id,
            )
        )

    def _action_list(self, reply_to: str) -> ActionList:
        """Every action waiting for an answer this caller may give (their own level 1, others' level 2)."""
        now = trio.current_time()
        waiting = self.hub.approvals.waiting_for(self.principal.sub, self.principal.roles, admin_only=False)
        return ActionList(
            actions=tuple(
                PendingActionInfo(
                    action_id=p.action_id,
                    kind=p.frame.kind,
                    name=p.frame.name,
                    arguments=p.frame.arguments,
                    level=p.frame.level,
                    approver=Approver(p.approver),
                    requester=p.requester,
                    reason=p.frame.reason,
                    expires_in_s=max(0.0, round(p.expires_at - now, 3)),
                    session_id=p.frame.session_id,
                )
                for p in waiting
            ),
            reply_to=reply_to,
        )

    def _resource_list(self, reply_to: str) -> ResourceList:
        """Every readable host's URI templates, filtered by what this caller may read."""
        readable = [
            template
            for template in self.hub.resources.templates()
            if decide(
                self.hub.config,
                self.principal.sub,
                self.principal.roles,
                "resource.read",
                template.uri_template.replace("{", "").replace("}", ""),
            ).effect
            != "deny"
        ]
        return ResourceList(
            resources=tuple(ResourceInfo(uri_template=t.uri_template, description=t.description) for t in readable),
            reply_to=reply_to,
        )

    async def _checked_offer(self, frame: ClientToolList) -> dict[str, OfferedTool]:
        """The client's offered tools, each with a valid JSON Schema that is cheap to validate against.

        The schemas are checked in a worker thread, under a deadline (engine.server.argcheck).
        """
        assert frame.tools is not None
        settings = self.hub.settings
        if len(frame.tools) > settings.max_offered_tools:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"{len(frame.tools)} tools offered; at most {settings.max_offered_tools} (limit offered_tools)",
                reply_to=frame.id,
                details={"path": "$.payload.tools", "maximum": settings.max_offered_tools},
            )
        for index, tool in enumerate(frame.tools):
            problem = await argcheck.offered_schema_problem(
                tool.parameters, max_bytes=settings.max_offered_schema_bytes
            )
            if problem is not None:
                code = ErrorCode.TOO_LARGE if "at most" in problem else ErrorCode.INVALID_MESSAGE
                raise ProtocolError(
                    code,
                    f"tool {tool.name!r}: {problem}",
                    reply_to=frame.id,
                    details={"path": f"$.payload.tools[{index}].parameters"},
                )
        return {tool.name: tool for tool in frame.tools}

    def tool_list(self, reply_to: str | None = None) -> ToolList:
        """The tools this caller may see, by the configuration in force now."""
        return ToolList(tools=_listed_tools(self.hub, self.principal), reply_to=reply_to)

    # --- closing ------------------------------------------------------------------------

    def _stop(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _close_soon(self, code: int, reason: str) -> None:
        if self._nursery is not None and not self._closing:
            self._closing = True
            with contextlib.suppress(RuntimeError):  # the nursery has just closed: the connection is ending
                self._nursery.start_soon(self._close, code, reason)

    async def _close(self, code: int, reason: str, *, after_notices: bool = False) -> None:
        """Close with ``code``; ``after_notices``: first let the writer take the queued notices
        (e.g. ``rate_limited``), so that they reach the client before the close does."""
        if after_notices and self._outbox is not None:
            with trio.move_on_after(self.hub.settings.send_timeout_s):
                await self._outbox.notices_taken()
        with trio.move_on_after(0.5):
            await self.transport.close(code, reason)
        self._stop()
