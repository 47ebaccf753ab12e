"""One action from request to result: validate, decide, ask, run, report.

Shared by the agent's turn loop and by direct ``tool_call`` frames, so both go
through the same decision, approval, sandbox and reporting.  The caller gets an
:class:`Outcome`; the client sees ``agent_action`` first and ``agent_result``
last, whatever happens in between.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import jsonschema
import trio

import sandbox

from ..config.model import Tool
from ..decision import decide
from ..protocol import (
    ActionKind,
    AgentAction,
    AgentResult,
    Approver,
    Executor,
    OfferedTool,
    ResultStatus,
    new_id,
)
from ..toolrun import run_tool
from .approvals import PendingAction

if TYPE_CHECKING:
    from .connection import Connection


@attrs.frozen
class Outcome:
    status: ResultStatus
    output: Any
    reason: str = ""

    def for_model(self) -> str:
        """The tool message content a model reads back (chat-completions ``role: tool``)."""
        body: dict[str, Any] = {"status": str(self.status), "output": self.output}
        if self.reason:
            body["reason"] = self.reason
        return json.dumps(body, ensure_ascii=False, default=str)


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    # Keyed by the schema's text: tools are re-created on every reload, their schemas rarely change.
    return jsonschema.Draft202012Validator(
        json.loads(schema_json), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def argument_errors(tool: Tool | OfferedTool, arguments: Any) -> list[str]:
    """Every way ``arguments`` fails the tool's schema, as readable lines."""
    if not isinstance(arguments, dict):
        shown = repr(arguments)
        return [f"arguments: {shown if len(shown) <= 80 else shown[:77] + '...'} is not of type 'object'"]
    validator = _validator(json.dumps(tool.parameters, sort_keys=True, default=str))
    errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        f"{'.'.join(map(str, error.absolute_path)) or 'arguments'}: {error.message}" for error in errors
    ]


async def perform(
    conn: Connection,
    name: str,
    arguments: Any,
    *,
    session_id: str | None,
    approval_timeout_s: float,
    reply_to: str | None = None,
) -> Outcome:
    """Carry out one tool call for ``conn``'s subject; never raises for the call's own failures.

    Cancellation (agent stopped, connection closed) propagates after the
    sandbox has killed the tool's processes and any pending approval is closed.
    """
    hub = conn.hub
    tool = hub.config.tools.get(name)
    offered = conn.client_tools.get(name) if tool is None else None
    if tool is None and offered is None:
        return _report(conn, None, name, arguments, session_id, reply_to, ResultStatus.ERROR, {"error": f"unknown tool {name!r}"})
    problems = argument_errors(tool or offered, arguments)  # type: ignore[arg-type]
    action_id = new_id()
    if problems:
        # The model sees what was wrong and can try again; nothing runs.
        return _report(
            conn, action_id, name, arguments, session_id, reply_to, ResultStatus.ERROR,
            {"error": "invalid arguments", "problems": problems}, tool=tool,
        )
    if offered is not None:
        return await _client_tool(conn, offered, arguments, session_id, approval_timeout_s, reply_to)
    assert tool is not None
    decision = decide(hub.config, conn.principal.sub, conn.principal.roles, "tool.call", tool.name, arguments)
    frame = AgentAction(
        action_id=action_id,
        kind=ActionKind.TOOL,
        name=name,
        arguments=arguments,
        level=tool.permission_level,
        requires_approval=decision.requires_approval,
        approver=Approver(decision.approver),
        executor=Executor.SERVER,
        reason=decision.reason,
        session_id=session_id,
        reply_to=reply_to,
    )
    if decision.effect == "deny":
        conn.send(frame)
        return _result(conn, frame, ResultStatus.DENIED, {"error": decision.reason}, decision.reason)
    if not decision.requires_approval:
        conn.send(frame)
    else:
        pending = PendingAction(frame=frame, requester=conn.principal.sub, approver=decision.approver)  # type: ignore[arg-type]
        refused = await _await_approval(conn, pending, approval_timeout_s)
        if refused is not None:
            return refused
    try:
        result = await run_tool(tool, arguments, workspace=hub.settings.workspace, work_root=hub.settings.work_root)
    except sandbox.SandboxError as exc:
        return _result(conn, frame, ResultStatus.ERROR, {"error": str(exc)}, str(exc))
    status = ResultStatus(result.status)
    if status == ResultStatus.OK:
        output = result.output
    else:
        output = {"error": result.message, "stderr": result.stderr_tail, "exit_code": result.exit_code}
    return _result(conn, frame, status, output, "" if status == ResultStatus.OK else result.message)


async def _await_approval(conn: Connection, pending: PendingAction, timeout_s: float) -> Outcome | None:
    """Wait for the answer; None when approved, else the outcome to report.

    The pending action is a durable record in the store (what was asked, a digest of
    the exact arguments, who may answer, until when); the store's atomic transition
    has the last word, so an answer that arrives after the expiry runs nothing.
    """
    hub = conn.hub
    frame = pending.frame
    # Recorded before anybody can see the action, so that no answer can arrive first.
    await hub.store.add_pending_action(
        action_id=frame.action_id, session_id=frame.session_id, subject=pending.requester, kind=str(frame.kind),
        name=frame.name, arguments=frame.arguments, level=frame.level, approver=pending.approver,
        expires_at=time.time() + timeout_s,
    )
    hub.approvals.add(pending)
    try:
        conn.send(frame)
        if pending.approver == "admin":
            for other in hub.connections:
                if other is not conn and pending.may_answer(other.principal.sub, other.principal.roles):
                    other.send(frame)
        with trio.move_on_after(timeout_s):
            await pending.event.wait()
        if pending.status == "pending":
            hub.approvals.close(pending, "expired", "no answer in time")
            await hub.store.expire_actions()
        elif not await hub.store.decide_action(frame.action_id, pending.status, pending.decided_by, pending.reason):
            pending.status = "expired"
    finally:
        if pending.status == "pending":
            # Cancelled while waiting: the agent was stopped or the connection closed.
            hub.approvals.close(pending, "cancelled", "the request was cancelled")
            with trio.move_on_after(2, shield=True):
                await hub.store.decide_action(frame.action_id, "cancelled", None, "the request was cancelled")
    frame = pending.frame
    if pending.status == "approved":
        return None
    if pending.status == "denied":
        why = f"denied by {pending.decided_by}" + (f": {pending.reason}" if pending.reason else "")
        return _result(conn, frame, ResultStatus.DENIED, {"error": why}, why)
    why = f"no approval within {timeout_s:g}s"
    return _result(conn, frame, ResultStatus.TIMEOUT, {"error": why}, why)


async def _client_tool(
    conn: Connection, tool: OfferedTool, arguments: Any, session_id: str | None, timeout_s: float, reply_to: str | None
) -> Outcome:
    """A tool the client runs itself: announce it, then wait for the client's result."""
    action_id = new_id()
    frame = AgentAction(
        action_id=action_id, kind=ActionKind.TOOL, name=tool.name, arguments=arguments,
        level=tool.level or 0, requires_approval=False, approver=Approver.NONE,
        executor=Executor.CLIENT, reason="offered by this client: it runs the tool itself",
        session_id=session_id, reply_to=reply_to,
    )
    waiter: trio.MemorySendChannel[Any]
    waiter, receiver = trio.open_memory_channel[Any](1)
    conn.client_results[action_id] = waiter
    try:
        conn.send(frame)
        with trio.move_on_after(timeout_s):
            result = await receiver.receive()
            return Outcome(ResultStatus(result.status), result.output)
    finally:
        conn.client_results.pop(action_id, None)
    why = f"the client sent no result within {timeout_s:g}s"
    return Outcome(ResultStatus.TIMEOUT, {"error": why}, why)


def _result(conn: Connection, frame: AgentAction, status: ResultStatus, output: Any, reason: str) -> Outcome:
    conn.send(
        AgentResult(
            action_id=frame.action_id, status=status, output=output,
            session_id=frame.session_id, reply_to=frame.reply_to,
        )
    )
    return Outcome(status, output, reason)


def _report(
    conn: Connection, action_id: str | None, name: str, arguments: Any, session_id: str | None,
    reply_to: str | None, status: ResultStatus, output: Mapping[str, Any], *, tool: Tool | None = None,
) -> Outcome:
    """A call refused before any decision: still shown to the client, as action and result."""
    frame = AgentAction(
        action_id=action_id or new_id(), kind=ActionKind.TOOL, name=name,
        arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
        level=tool.permission_level if tool else 0, requires_approval=False, approver=Approver.NONE,
        executor=Executor.SERVER, reason=str(output.get("error", "")), session_id=session_id, reply_to=reply_to,
    )
    conn.send(frame)
    return _result(conn, frame, status, dict(output), str(output.get("error", "")))
