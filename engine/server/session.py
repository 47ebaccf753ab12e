"""One agent session: its lifecycle, its history, and the turn loop.

Lifecycle (DESIGN.md)::

    initialized -> active -> processing <-> tool_use -> active
    active <-> paused;  processing/tool_use --cancel--> active
    any live state --stop--> terminated

A session's work runs in its own nursery, attached to one connection at a
time: stopping the agent, or closing the connection it is attached to, cancels
that nursery, which kills the tools it is running (before ``terminated`` is
reported, for a stop).  ``cancel`` cancels only the running turn, in its own
cancel scope: its tools are killed and its pending approvals cancelled (each
reported as an ``agent_result`` with status ``cancelled``), then the turn ends
with an ``agent_response`` marked ``cancelled`` and the session is ``active``
again, which answers the ``cancel``.  A client that reconnects while the
session is still live takes it over, pending approvals included (one that
comes back while the session is still winding down waits for it to end).  History and state are
persisted in the store, so a later ``agent_connect`` with the session id
resumes it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from contextlib import aclosing
from typing import Any

import attrs
import trio

from .. import tracing
from ..audit import secret_values
from ..config.model import Agent, Config
from ..memory import prelude as learning
from ..models import (
    ASK_AGENT,
    ASK_AGENT_TOOL,
    READ_RESOURCE,
    READ_RESOURCE_TOOL,
    ModelError,
    TextDelta,
    ToolCall,
    ToolDefinition,
    agent_model,
)
from ..models.routed import Routed
from ..protocol import (
    AgentResponse,
    AgentState,
    ErrorCode,
    LifecycleState,
    ProtocolError,
    ResponseToken,
    ResultStatus,
    new_id,
)
from .actions import Caller, Requester, Snapshot, perform, read
from .agentrun import run_python_agent
from .board import BOARD_TOOLS, Board, board_call, board_tools
from .delegation import Chain, ask_agent, ask_agent_call

log = logging.getLogger(__name__)
S = LifecycleState
_TRANSITIONS: dict[LifecycleState, frozenset[LifecycleState]] = {
    S.INITIALIZED: frozenset({S.ACTIVE, S.TERMINATED}),
    S.ACTIVE: frozenset({S.PROCESSING, S.PAUSED, S.TERMINATED}),
    S.PROCESSING: frozenset({S.TOOL_USE, S.ACTIVE, S.TERMINATED}),
    S.TOOL_USE: frozenset({S.PROCESSING, S.ACTIVE, S.TERMINATED}),
    S.PAUSED: frozenset({S.ACTIVE, S.TERMINATED}),
    S.TERMINATED: frozenset(),
}


@attrs.define(eq=False)
class Session:
    session_id: str
    agent: Agent
    # Where its frames go and for whom it acts: the connection it is attached to now.
    conn: Requester
    state: LifecycleState
    history: list[dict[str, Any]]
    _nursery: trio.Nursery | None = None
    _scope: trio.CancelScope | None = None
    _stop_reply: str | None = None
    # The running turn's own scope (None when idle), and the id of the `cancel` that hit it.
    _turn_scope: trio.CancelScope | None = None
    _cancel_reply: str | None = None
    _done: trio.Event = attrs.field(factory=trio.Event)
    # What the running turn gives the model before the conversation (memories, examples: engine/memory).
    _prelude: list[dict[str, Any]] = attrs.field(factory=list)
    # The delegations of the running turn (engine/server/delegation.py), by turn id.
    _chain: tuple[str, Chain] | None = None
    # The notes the session's agents leave each other (engine/server/board.py).
    board: Board = attrs.field(factory=Board)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the session's work until it is stopped or its connection closes."""
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.move_on_after(2, shield=True):
                if self._stop_reply is not None:
                    await self._set_state(S.TERMINATED, reply_to=self._stop_reply, force=True)
                elif self.state in (S.PROCESSING, S.TOOL_USE):
                    # The connection closed mid-turn: the turn is gone, the session is resumable.
                    await self._set_state(S.ACTIVE, force=True, announce=False)
                self.conn.hub.sessions.pop(self.session_id, None)
                self.conn.hub.run_slots.pop(self.session_id, None)
                self._done.set()

    @property
    def ending(self) -> bool:
        """Stopped or detached: its work is being cancelled and it is about to leave the hub."""
        return self._done.is_set() or (self._scope is not None and self._scope.cancel_called)

    async def wait_ended(self) -> None:
        """Until the session has left the hub (its tools dead, its state stored)."""
        await self._done.wait()

    async def detach(self) -> None:
        """The connection is gone: cancel the session's work and wait until its tools are dead."""
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    # --- requests from the client -----------------------------------------------------

    async def message(self, content: str, reply_to: str) -> None:
        if self.state != S.ACTIVE:
            raise ProtocolError(
                ErrorCode.INVALID_STATE,
                f"the session is {self.state}: messages are accepted only when it is active",
                reply_to=reply_to,
            )
        assert self._nursery is not None
        # The scope exists before the task starts: a `cancel` right after the message finds it.
        scope = self._turn_scope = trio.CancelScope()
        self._cancel_reply = None
        await self._set_state(S.PROCESSING)
        self._nursery.start_soon(self._turn, content, scope)

    async def control(self, command: str, reply_to: str) -> None:
        if command == "stop":
            if self._stop_reply is None:
                self._stop_reply = reply_to
                assert self._scope is not None
                self._scope.cancel()
            return
        if command == "cancel":
            self._cancel(reply_to)
            return
        wanted = S.PAUSED if command == "pause" else S.ACTIVE
        required = S.ACTIVE if command == "pause" else S.PAUSED
        if self.state != required:
            raise ProtocolError(
                ErrorCode.INVALID_STATE,
                f"cannot {command} a session that is {self.state} (it must be {required})",
                reply_to=reply_to,
            )
        await self._set_state(wanted, reply_to=reply_to)

    def announce(self, reply_to: str | None = None) -> None:
        self.conn.send(
            AgentState(session_id=self.session_id, agent=self.agent.name, state=self.state, reply_to=reply_to)
        )

    async def open(self, reply_to: str | None) -> None:
        """Tell the client this session is there: a new one becomes active; a resumed one
        keeps the state it was stored in (the caller maps a turn cut short to active)."""
        if self.state == S.INITIALIZED:
            await self._set_state(S.ACTIVE, reply_to=reply_to)
        else:
            await self._set_state(self.state, reply_to=reply_to, force=True)

    def follow(self, conn: Requester, reply_to: str | None) -> None:
        """Move this live session to ``conn`` (its subject reconnected) and say so there."""
        self.conn = conn
        self.announce(reply_to)

    # --- the turn loop ----------------------------------------------------------------

    def _cancel(self, reply_to: str) -> None:
        """Cancel the running turn; its end (``agent_state`` active) answers ``reply_to``."""
        scope = self._turn_scope
        if scope is None or self.state not in (S.PROCESSING, S.TOOL_USE):
            why = f"no turn is running to cancel (the session is {self.state})"
            raise ProtocolError(ErrorCode.INVALID_STATE, why, reply_to=reply_to)
        if self._cancel_reply is not None:
            raise ProtocolError(ErrorCode.INVALID_STATE, "the turn is already being cancelled", reply_to=reply_to)
        self._cancel_reply = reply_to
        scope.cancel()

    async def _turn(self, content: str, scope: trio.CancelScope) -> None:
        metrics = self.conn.hub.metrics
        turn_id = new_id()
        # What the turn answered so far, and the model's tool calls still without a result,
        # so that a cancelled turn leaves a history every model accepts.
        said: list[str] = []
        unanswered: dict[str, str] = {}
        try:
            with metrics.turn_seconds.time(), tracing.span(
                    "sconnect.turn", subject=self.conn.principal.sub, agent=self.agent.name,
                    session_id=self.session_id, turn_id=turn_id):
                with scope:
                    await self._run_turn(content, turn_id, said, unanswered)
        finally:
            metrics.turns_total.inc()
            if self._turn_scope is scope:
                self._turn_scope = None
        if scope.cancelled_caught:
            await self._end_cancelled_turn(turn_id, "".join(said), unanswered)
        elif self._cancel_reply is not None:
            # The turn had answered before the cancel reached it: the session is active, say so.
            reply_to, self._cancel_reply = self._cancel_reply, None
            self.announce(reply_to)

    async def _end_cancelled_turn(self, turn_id: str, said: str, unanswered: dict[str, str]) -> None:
        """Close the cancelled turn: its history, its ``agent_response``, the session back to active."""
        reply_to, self._cancel_reply = self._cancel_reply, None
        # Shielded: a stop or a closed connection arriving now must not leave the history half-written.
        with trio.move_on_after(2, shield=True):
            answered = {m.get("tool_call_id") for m in self.history if m.get("role") == "tool"}
            for call_id, name in unanswered.items():
                if call_id in answered:
                    continue  # remembered just before the cancel reached the turn
                await self._remember({
                    "role": "tool", "tool_call_id": call_id, "name": name,
                    "content": '{"status": "cancelled", "output": {"error": "the user cancelled the turn"}}',
                })
            note = "(the user cancelled this turn)"
            await self._remember({"role": "assistant", "content": f"{said}\n{note}" if said else note})
            self.conn.send(AgentResponse(session_id=self.session_id, turn_id=turn_id, content=said, cancelled=True))
            await self._set_state(S.ACTIVE, reply_to=reply_to, force=True)

    async def _run_turn(self, content: str, turn_id: str, said: list[str], unanswered: dict[str, str]) -> None:
        await self._remember({"role": "user", "content": content})
        # Each turn runs on one configuration, the one in force when it starts: a reload
        # during the turn (while it waits for an approval, say) takes effect at the next.
        snap = Snapshot.of(self.conn.hub)
        current = snap.config.agents.get(self.agent.name)
        if current is None:
            answer = f"The agent {self.agent.name!r} was removed from the configuration; start another session."
            self.conn.send(ResponseToken(session_id=self.session_id, turn_id=turn_id, token=answer))
            self.conn.send(AgentResponse(session_id=self.session_id, turn_id=turn_id, content=answer))
            await self._set_state(S.ACTIVE)
            return
        self.agent = current
        if current.python is not None:
            await self._run_python_turn(content, turn_id, said, snap)
            return
        definitions = self._tool_definitions(snap.config)
        answer = ""
        # Also who the turn's memories and record belong to (engine/memory/prelude.py).
        turn_caller = Caller(self.conn, self.session_id, current.name, snapshot=snap)
        tools_called: list[str] = []
        model: Routed | None = None
        try:
            routing = await learning.routing_context(self.conn.hub.store, current)
            model = agent_model(self.agent, snap.config, self.conn.hub.metrics, routing)
            self._prelude = await learning.prelude(turn_caller, current)
            for _step in range(self.agent.max_steps):
                text: list[str] = []
                calls: list[ToolCall] = []
                with tracing.span("sconnect.model", agent=self.agent.name, turn_id=turn_id, step=_step,
                                  model=self.agent.model_summary) as traced:
                    async with aclosing(model.stream(self._conversation(), definitions)) as stream:
                        async for item in stream:
                            if isinstance(item, TextDelta):
                                text.append(item.text)
                                said.append(item.text)
                                self.conn.send(
                                    ResponseToken(session_id=self.session_id, turn_id=turn_id, token=item.text))
                            else:
                                calls.append(item)
                    if traced is not None:
                        traced.set_attribute("sconnect.tool_calls", len(calls))
                message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
                if calls:
                    message["tool_calls"] = [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in calls
                    ]
                await self._remember(message)
                unanswered.update((c.id, c.name) for c in calls)
                if not calls:
                    answer = "".join(text)
                    break
                await self._set_state(S.TOOL_USE)
                caller = Caller(
                    self.conn, self.session_id, self.agent.name, float(self.agent.approval_timeout),
                    agent_resources=tuple(self.agent.resources), agent_tools=tuple(d.name for d in definitions),
                    snapshot=snap,
                )
                for call in calls:
                    tools_called.append(call.name)
                    if call.name == READ_RESOURCE and isinstance(call.arguments, dict) and "uri" in call.arguments:
                        outcome, _content = await read(caller, str(call.arguments["uri"]))
                    elif call.name == ASK_AGENT and self.agent.delegates:
                        outcome = await ask_agent_call(caller, self._delegations(turn_id), call.arguments)
                    elif call.name in BOARD_TOOLS and self.agent.board != "none":
                        outcome = await board_call(caller, self.agent, call.name, call.arguments)
                    else:
                        outcome = await perform(caller, call.name, call.arguments)
                    called = snap.config.tools.get(call.name)
                    await self._remember(
                        {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": outcome.for_model()},
                        hide=secret_values(call.arguments, called.secret_arguments)
                        if called is not None and isinstance(call.arguments, dict) else (),
                    )
                    unanswered.pop(call.id, None)
                await self._set_state(S.PROCESSING)
            else:
                answer = f"I stopped after {self.agent.max_steps} steps without finishing this turn."
                self.conn.send(ResponseToken(session_id=self.session_id, turn_id=turn_id, token=answer))
                await self._remember({"role": "assistant", "content": answer})
        except ModelError as exc:
            log.warning("model failed: %s", exc, extra={"session_id": self.session_id})
            answer = f"The model failed: {exc}"
            self.conn.send(ResponseToken(session_id=self.session_id, turn_id=turn_id, token=answer))
        except Exception:
            log.exception("turn failed", extra={"session_id": self.session_id})
            answer = "Something went wrong on the server while answering; the error is in its log."
            self.conn.send(ResponseToken(session_id=self.session_id, turn_id=turn_id, token=answer))
        # Kept before the answer goes out, so that a rating sent on receipt finds the turn.
        await learning.record_turn(turn_caller, current, turn_id=turn_id, question=content, answer=answer,
                                   model=model, tools=tools_called)
        self.conn.send(AgentResponse(session_id=self.session_id, turn_id=turn_id, content=answer))
        # Answered: a `cancel` arriving now is too late to cancel anything (see _turn).
        with trio.CancelScope(shield=True):
            await self._set_state(S.ACTIVE)

    def _delegations(self, turn_id: str) -> Chain:
        """The chain (and budget) of delegations of turn ``turn_id``, made at its first delegation."""
        if self._chain is None or self._chain[0] != turn_id:
            self._chain = (turn_id, Chain.root(self.agent.name))
        return self._chain[1]

    async def _run_python_turn(self, content: str, turn_id: str, said: list[str], snap: Snapshot) -> None:
        """A turn of a custom Python agent (engine/server/agentrun.py); ends the turn as the model loop does."""
        definitions = self._tool_definitions(snap.config)
        caller = Caller(
            self.conn, self.session_id, self.agent.name, float(self.agent.approval_timeout),
            agent_resources=tuple(self.agent.resources), agent_tools=tuple(d.name for d in definitions),
            snapshot=snap,
        )

        def say(text: str) -> None:
            said.append(text)
            self.conn.send(ResponseToken(session_id=self.session_id, turn_id=turn_id, token=text))

        async def on_action(acting: bool) -> None:
            # Only from the state the turn left it in: a cancel or stop may have moved it already.
            if acting and self.state == S.PROCESSING:
                await self._set_state(S.TOOL_USE)
            elif not acting and self.state == S.TOOL_USE:
                await self._set_state(S.PROCESSING)

        turn = await run_python_agent(
            self.agent, content, caller=caller, history=self.history[:-1], delegated_by=None, say=say,
            ask=functools.partial(ask_agent, caller, self._delegations(turn_id)), on_action=on_action,
        )
        answer = turn.answer
        if turn.status != ResultStatus.OK:
            note = turn.reason if turn.status == ResultStatus.LIMIT_EXCEEDED else f"({turn.reason})"
            tail = f"\n{note}" if answer else note
            say(tail)
            answer += tail
        await self._remember({"role": "assistant", "content": answer})
        self.conn.send(AgentResponse(session_id=self.session_id, turn_id=turn_id, content=answer))
        with trio.CancelScope(shield=True):
            await self._set_state(S.ACTIVE)

    def _tool_definitions(self, config: Config) -> list[ToolDefinition]:
        tools = config.tools
        builtin = [READ_RESOURCE_TOOL] if self.agent.resources else []
        builtin += [ASK_AGENT_TOOL] if self.agent.delegates else []
        builtin += board_tools(self.agent)
        found = [
            ToolDefinition(tools[name].name, tools[name].description, tools[name].parameters)
            for name in self.agent.tools
            if name in tools
        ]
        found += [
            ToolDefinition(t.name, t.description, t.parameters)
            for t in self.conn.client_tools.values()
            if t.name not in tools and (t.name in self.agent.client_tools or "*" in self.agent.client_tools)
        ]
        return builtin + found

    def _conversation(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.agent.system_prompt}] if self.agent.system_prompt else []
        return system + self._prelude + self.history

    async def _remember(self, message: dict[str, Any], hide: Iterable[str] = ()) -> None:
        self.history.append(message)
        # Persisted with each tool's secret arguments redacted (and ``hide``, the secret
        # values a tool result may quote); the clear ones stay in memory.
        tools = self.conn.hub.config.tools
        secret = {name: tool.secret_arguments for name, tool in tools.items() if tool.secret_arguments}
        await self.conn.hub.store.append_message(self.session_id, message, secret=secret, hide=hide)

    async def _set_state(
        self, state: LifecycleState, *, reply_to: str | None = None, force: bool = False, announce: bool = True
    ) -> None:
        if not force and state not in _TRANSITIONS[self.state]:
            raise ProtocolError(
                ErrorCode.INVALID_STATE, f"cannot go from {self.state} to {state}", reply_to=reply_to
            )
        self.state = state
        await self.conn.hub.store.set_session_state(self.session_id, str(state))
        if announce:
            self.announce(reply_to)
