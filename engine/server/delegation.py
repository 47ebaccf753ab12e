"""Agents asking agents: ``delegates:`` in an agent's file, ``agent.delegate`` in policy.

An agent asks another with the built-in tool ``ask_agent`` (a model) or
``context.delegate`` (a Python agent).  The request is checked here — the
asked agent is one of the asker's ``delegates``, it is not already in the chain
of agents that led here (A asks B asks A is refused), the chain is at most
:data:`MAX_DEPTH` agents below the session's own, and one user turn makes at
most :data:`MAX_DELEGATIONS` delegated turns at all depths together — and then
goes through :func:`engine.server.actions.perform_builtin`: the policy
decides ``agent.delegate`` on the asked agent at its ``delegation_level``, the
user (or an admin) approves when that says so, and the decision and execution
are audited with who asked whom.

The asked agent's turn is a child turn for the same subject and session: its
text is not streamed to the user (it is the result the asker reads back), but
each of its own actions is, as an ``agent_action`` / ``agent_result`` pair,
and those needing approval reach the user as usual.  Its actions run with the
asked agent's own tools, resource hosts and approval timeout, and their audit
records carry ``details.delegation`` (the ``ask_agent`` action's id, the asking
agent, the depth), which links them to the asker's records.

Cancellation: the child turn runs inside the asker's action, so cancelling or
stopping the user's turn cancels it (its tools killed, its execution recorded
as cancelled).  ``turn_timeout`` of the asked agent bounds the child turn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

import attrs
import trio

from ..auth import Principal
from ..config.model import Agent
from ..models import ASK_AGENT, READ_RESOURCE, ModelError, TextDelta, ToolCall, agent_model
from ..protocol import ActionKind, OfferedTool, ResultStatus, ServerFrame
from .actions import Builtin, Caller, Outcome, Requester, perform, perform_builtin, read, refuse_builtin
from .agentrun import AgentTurn, run_python_agent, tool_definitions
from .board import BOARD_TOOLS, board_call

log = logging.getLogger(__name__)

# Agents below the session's own in one chain of delegations.
MAX_DEPTH = 3
# Delegated turns one user turn may cause, all depths together.
MAX_DELEGATIONS = 16
MAX_MESSAGE_CHARS = 20_000


@attrs.define(eq=False)
class Budget:
    """Delegated turns started so far in one user turn (shared by the whole tree)."""

    used: int = 0


@attrs.frozen
class Chain:
    """The agents from the session's own to the one asking now, and the action that asked for this one."""

    path: tuple[str, ...]
    budget: Budget
    parent_action: str | None = None

    @classmethod
    def root(cls, agent: str) -> Chain:
        return cls((agent,), Budget())

    def child(self, agent: str, action_id: str) -> Chain:
        return Chain((*self.path, agent), self.budget, action_id)


@attrs.define(eq=False)
class DelegatedRequester:
    """The requester of a child turn: the user's own, with the delegation added to every audit record."""

    inner: Requester
    delegation: Mapping[str, Any]

    @property
    def hub(self) -> Any:
        return self.inner.hub

    @property
    def principal(self) -> Principal:
        return self.inner.principal

    @property
    def client_tools(self) -> Mapping[str, OfferedTool]:
        return self.inner.client_tools

    @property
    def client_results(self) -> dict[str, trio.MemorySendChannel[Any]]:
        return self.inner.client_results

    @property
    def slot_key(self) -> str:
        return self.inner.slot_key

    @property
    def audit_context(self) -> Mapping[str, Any]:
        return {**self.inner.audit_context, "delegation": dict(self.delegation)}

    def send(self, frame: ServerFrame) -> None:
        self.inner.send(frame)


async def ask_agent_call(caller: Caller, chain: Chain, arguments: Any) -> Outcome:
    """A model's ``ask_agent`` tool call: its arguments checked, then :func:`ask_agent`."""
    shape_ok = isinstance(arguments, dict) and set(arguments) == {"agent", "message"} \
        and isinstance(arguments.get("agent"), str) and isinstance(arguments.get("message"), str)
    if not shape_ok:
        why = 'invalid arguments: ask_agent takes {"agent": <name>, "message": <text>}'
        named = arguments.get("agent") if isinstance(arguments, dict) else None
        target = named if isinstance(named, str) and named else "(none)"
        return await refuse_builtin(caller, _asking(target, 0), arguments, why, ResultStatus.ERROR,
                                    _details(caller, chain))
    return await ask_agent(caller, chain, arguments["agent"], arguments["message"])


async def ask_agent(caller: Caller, chain: Chain, agent: str, message: str) -> Outcome:
    """Ask ``agent`` to answer ``message`` for ``caller`` (whose agent is ``chain.path[-1]``)."""
    caller = caller.pinned()
    config = caller.snap.config
    asker = chain.path[-1]
    arguments = {"agent": agent, "message": message}
    details = _details(caller, chain)
    asking = config.agents.get(asker)
    asked = config.agents.get(agent)
    level = asked.delegation_level if asked is not None else 0

    async def refuse(why: str, status: ResultStatus = ResultStatus.DENIED) -> Outcome:
        return await refuse_builtin(caller, _asking(agent, level), arguments, why, status, details)

    if asking is None or agent not in asking.delegates:
        listed = ", ".join(asking.delegates) if asking is not None and asking.delegates else "none"
        return await refuse(f"agent {asker!r} may not ask agent {agent!r} (its delegates: {listed})")
    if asked is None:
        return await refuse(f"agent {agent!r} is not in the configuration", ResultStatus.ERROR)
    if agent in chain.path:
        return await refuse("delegation loop: " + " -> ".join((*chain.path, agent)) + " (refused)")
    if len(chain.path) > MAX_DEPTH:
        why = f"delegation too deep: {' -> '.join((*chain.path, agent))} goes past {MAX_DEPTH} agents below the first"
        return await refuse(why, ResultStatus.LIMIT_EXCEEDED)
    if chain.budget.used >= MAX_DELEGATIONS:
        return await refuse(f"this turn already asked other agents {MAX_DELEGATIONS} times, the most one turn may",
                            ResultStatus.LIMIT_EXCEEDED)
    if not message.strip() or len(message) > MAX_MESSAGE_CHARS:
        return await refuse(f"the message must be 1 to {MAX_MESSAGE_CHARS} characters", ResultStatus.ERROR)
    chain.budget.used += 1
    execute = functools.partial(_child_turn, caller, chain, asked, message)
    return await perform_builtin(caller, _asking(agent, level), arguments, details, execute)


def _asking(agent: str, level: int) -> Builtin:
    return Builtin("agent.delegate", agent, ActionKind.TOOL, ASK_AGENT, level)


def _details(caller: Caller, chain: Chain) -> dict[str, Any]:
    return {"delegated_by": chain.path[-1], "depth": len(chain.path), "chain": list(chain.path),
            **({"parent_action": chain.parent_action} if chain.parent_action else {})}


async def _child_turn(
    caller: Caller, chain: Chain, asked: Agent, message: str, action_id: str
) -> tuple[ResultStatus, Any, str]:
    """Run ``asked``'s turn for ``message`` under the asker's authority; the outcome the asker reads."""
    config = caller.snap.config
    child_chain = chain.child(asked.name, action_id)
    delegation = {"action_id": action_id, "by": chain.path[-1], "depth": len(child_chain.path) - 1}
    requester = DelegatedRequester(caller.conn, delegation)
    definitions = tool_definitions(asked, config, caller.conn.client_tools)
    child = Caller(
        requester, caller.session_id, asked.name, float(asked.approval_timeout),
        agent_resources=tuple(asked.resources), agent_tools=tuple(d.name for d in definitions), snapshot=caller.snap,
    )
    turn: AgentTurn | None = None
    with trio.move_on_after(float(asked.turn_timeout)):
        if asked.python_class is not None:
            turn = await run_python_agent(
                asked, message, caller=child, history=(), delegated_by=chain.path[-1], say=lambda _text: None,
                ask=functools.partial(ask_agent, child, child_chain),
            )
        else:
            turn = await _model_turn(asked, message, child, child_chain)
    if turn is None:
        why = f"the agent {asked.name!r} did not finish within {float(asked.turn_timeout):g}s"
        return ResultStatus.TIMEOUT, {"agent": asked.name, "error": why}, why
    output: dict[str, Any] = {"agent": asked.name, "answer": turn.answer}
    if turn.status != ResultStatus.OK:
        output["error"] = turn.reason
    return turn.status, output, turn.reason


async def _model_turn(agent: Agent, message: str, caller: Caller, chain: Chain) -> AgentTurn:
    """A delegated turn of a model agent: the model loop, its text collected rather than streamed."""
    config = caller.snap.config
    hub = caller.conn.hub
    definitions = tool_definitions(agent, config, caller.conn.client_tools)
    messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}] if agent.system_prompt else []
    messages.append({"role": "user", "content": message})
    try:
        model = agent_model(agent, config, hub.metrics)
        for _step in range(agent.max_steps):
            text: list[str] = []
            calls: list[ToolCall] = []
            async with aclosing(model.stream(messages, definitions)) as stream:
                async for item in stream:
                    if isinstance(item, TextDelta):
                        text.append(item.text)
                    else:
                        calls.append(item)
            said: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                said["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ]
            messages.append(said)
            if not calls:
                return AgentTurn(ResultStatus.OK, "".join(text))
            for call in calls:
                outcome = await _act(caller, agent, chain, call)
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                 "content": outcome.for_model()})
        why = f"the agent {agent.name!r} stopped after {agent.max_steps} steps without finishing"
        return AgentTurn(ResultStatus.LIMIT_EXCEEDED, "", why)
    except ModelError as exc:
        log.warning("delegated turn of %s: the model failed: %s", agent.name, exc,
                    extra={"session_id": caller.session_id})
        return AgentTurn(ResultStatus.ERROR, "", f"the model of agent {agent.name!r} failed: {exc}")


async def _act(caller: Caller, agent: Agent, chain: Chain, call: ToolCall) -> Outcome:
    if call.name == READ_RESOURCE and isinstance(call.arguments, dict) and "uri" in call.arguments:
        outcome, _content = await read(caller, str(call.arguments["uri"]))
        return outcome
    if call.name == ASK_AGENT and agent.delegates:
        return await ask_agent_call(caller, chain, call.arguments)
    if call.name in BOARD_TOOLS and agent.board != "none":
        return await board_call(caller, agent, call.name, call.arguments)
    return await perform(caller, call.name, call.arguments)
