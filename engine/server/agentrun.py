"""One turn of a custom Python agent (engine/agents/): its context, its bounds, its outcome.

The agent acts only through :class:`TurnContext`, whose actions go through
:func:`engine.server.actions.perform` / :func:`~engine.server.actions.read`
for the agent's own :class:`~engine.server.actions.Caller` (its tools and
resource hosts, so nothing outside its lists runs), and delegations through the
``ask`` callable its creator gives (engine/server/delegation.py), so this
module decides, approves and runs nothing itself.

Bounds of one turn (the agent's file sets the first two):

- ``max_steps`` actions: asking for one more ends the turn (``limit_exceeded``);
- ``turn_timeout``: past it the turn ends (``timeout``), its running action cancelled;
- :data:`~engine.agents.base.MAX_SAID_CHARS` characters said: past it the turn ends (``limit_exceeded``).

A turn is ended by cancelling the agent's own cancel scope: the agent sees
``trio.Cancelled`` at its next ``await`` and cannot go on, whatever it catches.
An exception from the agent ends the turn with ``error``; it is logged with its
traceback (the user is told only the exception's type).  So does a step of the
agent that holds the event loop too long without awaiting (engine/server/agentguard.py).  Cancellation from
outside (the user's ``cancel``/``stop``, a closed connection) propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import trio

from ..agents.base import MAX_SAID_CHARS, ActionResult, AgentContext
from ..config.model import Agent, Config
from ..models import ASK_AGENT_TOOL, READ_RESOURCE_TOOL, ToolDefinition
from ..protocol import OfferedTool, ResultStatus
from .actions import Caller, Outcome, perform, read
from .agentguard import AgentBlocked, guarded
from .board import board_tools, post_to_board, read_board

log = logging.getLogger(__name__)

# Ask another agent: (agent, message) -> the delegation's outcome (engine/server/delegation.py).
Ask = Callable[[str, str], Awaitable[Outcome]]
# Told True when the first of the turn's running actions starts, False when the last ends.
OnAction = Callable[[bool], Awaitable[None]]


@attrs.frozen
class AgentTurn:
    """How a turn ended: ``ok``, ``error``, ``timeout`` or ``limit_exceeded``; what it said; why."""

    status: ResultStatus
    answer: str
    reason: str = ""


def tool_definitions(agent: Agent, config: Config, client_tools: Mapping[str, OfferedTool]) -> list[ToolDefinition]:
    """The tools ``agent`` is offered: the built-ins it qualifies for, its declared tools, the client's it may use."""
    builtin = [READ_RESOURCE_TOOL] if agent.resources else []
    builtin += [ASK_AGENT_TOOL] if agent.delegates else []
    builtin += board_tools(agent)
    found = [
        ToolDefinition(config.tools[name].name, config.tools[name].description, config.tools[name].parameters)
        for name in agent.tools
        if name in config.tools
    ]
    found += [
        ToolDefinition(t.name, t.description, t.parameters)
        for t in client_tools.values()
        if t.name not in config.tools and (t.name in agent.client_tools or "*" in agent.client_tools)
    ]
    return builtin + found


def result_of(outcome: Outcome) -> ActionResult:
    return ActionResult(str(outcome.status), outcome.output, outcome.reason)


@attrs.define(eq=False)
class TurnContext(AgentContext):
    """The engine's :class:`~engine.agents.base.AgentContext` for one turn."""

    _agent: Agent
    _caller: Caller
    _history: tuple[Mapping[str, Any], ...]
    _delegated_by: str | None
    _say: Callable[[str], None]
    _ask: Ask
    _on_action: OnAction | None = None
    said: list[str] = attrs.field(factory=list)
    # Why the context ended the turn (a bound was passed); None while within bounds.
    ended: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _steps: int = 0
    _said_chars: int = 0
    _running: int = 0

    @property
    def agent(self) -> str:
        return self._agent.name

    @property
    def subject(self) -> str:
        return self._caller.sub

    @property
    def session_id(self) -> str:
        return self._caller.session_id or ""

    @property
    def history(self) -> Sequence[Mapping[str, Any]]:
        return self._history

    @property
    def delegated_by(self) -> str | None:
        return self._delegated_by

    async def say(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"say() takes a string, not {type(text).__name__}")
        self._said_chars += len(text)
        if self._said_chars > MAX_SAID_CHARS:
            await self._end(f"the agent said more than {MAX_SAID_CHARS} characters in one turn")
        if text:
            self.said.append(text)
            self._say(text)
        await trio.lowlevel.checkpoint()

    async def call_tool(self, name: str, arguments: Mapping[str, Any]) -> ActionResult:
        await self._step()
        plain = dict(arguments) if isinstance(arguments, Mapping) else arguments
        async with self._acting():
            return result_of(await perform(self._caller, str(name), plain))

    async def read_resource(self, uri: str) -> ActionResult:
        await self._step()
        async with self._acting():
            outcome, _content = await read(self._caller, str(uri))
        return result_of(outcome)

    async def delegate(self, agent: str, message: str) -> ActionResult:
        await self._step()
        async with self._acting():
            return result_of(await self._ask(str(agent), str(message)))

    async def read_board(self) -> ActionResult:
        await self._step()
        async with self._acting():
            return result_of(await read_board(self._caller, self._agent))

    async def post_to_board(self, text: str) -> ActionResult:
        await self._step()
        async with self._acting():
            return result_of(await post_to_board(self._caller, self._agent, text))

    async def _step(self) -> None:
        if self._steps >= self._agent.max_steps:
            await self._end(f"I stopped after {self._agent.max_steps} steps without finishing this turn.")
        self._steps += 1

    async def _end(self, why: str) -> None:
        """End the turn: the agent's scope is cancelled, so this raises Cancelled into the agent."""
        if self.ended is None:
            self.ended = why
        self.scope.cancel()
        await trio.lowlevel.checkpoint()

    def _acting(self) -> _Acting:
        return _Acting(self)


@attrs.define(eq=False)
class _Acting:
    """Counts the turn's running actions, telling the session when it starts and stops using tools."""

    context: TurnContext

    async def __aenter__(self) -> None:
        context = self.context
        context._running += 1
        if context._running == 1 and context._on_action is not None:
            await context._on_action(True)

    async def __aexit__(self, *exc: object) -> None:
        context = self.context
        context._running -= 1
        if context._running == 0 and context._on_action is not None:
            with trio.CancelScope(shield=True):
                await context._on_action(False)


async def run_python_agent(
    agent: Agent, message: str, *, caller: Caller, history: Sequence[Mapping[str, Any]], delegated_by: str | None,
    say: Callable[[str], None], ask: Ask, on_action: OnAction | None = None,
) -> AgentTurn:
    """Run one turn of the Python agent ``agent`` (its ``python_class`` loaded with the configuration)."""
    plain_history = tuple(
        MappingProxyType({"role": m["role"], "content": m["content"]})
        for m in history
        if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
    )
    context = TurnContext(agent, caller, plain_history, delegated_by, say, ask, on_action)
    extra = {"session_id": caller.session_id, "agent": agent.name}
    failure = ""
    with trio.move_on_after(float(agent.turn_timeout)) as deadline:
        with context.scope:
            try:
                instance = agent.python_class()
                returned = await guarded(instance.process_message(message, context))
                if returned is not None and not isinstance(returned, str):
                    failure = f"process_message returned a {type(returned).__name__}, not a string or None"
                    log.error("agent %s: %s", agent.name, failure, extra=extra)
                elif returned:
                    await context.say(returned)
            except Exception as exc:
                log.exception("agent %s failed", agent.name, extra=extra)
                failure = f"the agent {agent.name!r} failed ({type(exc).__name__}); the error is in the server log"
            except AgentBlocked as exc:
                log.error("agent %s %s: its turn is ended", agent.name, exc, extra=extra)
                failure = f"the agent {agent.name!r} {exc}: its turn was ended"
    answer = "".join(context.said)
    if context.ended is not None:
        return AgentTurn(ResultStatus.LIMIT_EXCEEDED, answer, context.ended)
    if deadline.cancelled_caught:
        why = f"the agent {agent.name!r} did not finish within {float(agent.turn_timeout):g}s"
        return AgentTurn(ResultStatus.TIMEOUT, answer, why)
    if failure:
        return AgentTurn(ResultStatus.ERROR, answer, failure)
    return AgentTurn(ResultStatus.OK, answer)
