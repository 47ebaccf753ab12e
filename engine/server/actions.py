"""One action from request to result: validate, decide, audit, ask, run, report.

Shared by the agent's turn loop and by direct ``tool_call`` / ``resource_request``
frames, so every path goes through the same decision (the policy engine), the
same approvals, the same sandbox and the same audit records.  The client sees
``agent_action`` first and ``agent_result`` last, whatever happens between.

Audit: the decision is recorded before anything is asked or run, each answer
to an approval when it arrives, and the execution (or read) before its result
is sent.  A failing audit write fails the action: nothing runs unrecorded.

Front doors: an action runs for a :class:`Requester` (who asks, and where the
``agent_action`` / ``agent_result`` events go), not for a WebSocket connection,
so the WebSocket and the MCP front doors share this one path.

Configuration: each call takes one :class:`Snapshot` (configuration, resource
hosts, policy revision) when it starts and uses it to the end, so a reload in
the middle (while waiting for an approval, say) never makes an execution record
name another revision than its decision.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

import sandbox

from .. import tracing
from ..audit import AuditError, AuditEvent
from ..auth import Principal
from ..config.model import ASK_AGENT, POST_TO_BOARD, Config, Tool
from ..config.tool_kinds import ToolKind, kind_of
from ..decision import Decision, decide
from ..protocol import (
    ActionKind,
    AgentAction,
    AgentResult,
    Approver,
    Executor,
    GrantRef,
    OfferedTool,
    ResultStatus,
    ServerFrame,
    new_id,
)
from ..protocol.content import digests
from ..resources import Content, Reader, ResourceError, ResourceHosts
from ..toolrun import Egress, isolation_for, run_tool
from . import argcheck, grants
from .approvals import PendingAction
from .hub import Hub


class Requester(Protocol):
    """What an action needs from the front door it came through.

    The WebSocket :class:`~engine.server.connection.Connection` is one; the MCP
    front door's per-request requester is another.
    """

    @property
    def hub(self) -> Hub: ...

    @property
    def principal(self) -> Principal: ...

    @property
    def client_tools(self) -> Mapping[str, OfferedTool]:
        """Tools this client offers to run itself (empty where a front door has none)."""
        ...

    @property
    def client_results(self) -> dict[str, trio.MemorySendChannel[Any]]:
        """Where the client's results for its own tools are delivered, by action id."""
        ...

    @property
    def slot_key(self) -> str:
        """Whose limit on tool runs at once a direct call (no session) counts against."""
        ...

    @property
    def audit_context(self) -> Mapping[str, Any]:
        """Added to the ``details`` of every audit record of its actions (transport, request id, ...)."""
        ...

    def send(self, frame: ServerFrame) -> None:
        """Deliver an ``agent_action`` or ``agent_result`` event; never blocks."""
        ...


@attrs.frozen
class Snapshot:
    """The configuration one call runs on from start to end (a reload swaps the hub's, not this)."""

    config: Config
    resources: ResourceHosts
    policy_revision: str

    @classmethod
    def of(cls, hub: Hub) -> Snapshot:
        # The reload swaps the three together in one synchronous step: read together, they agree.
        return cls(hub.config, hub.resources, hub.policy_revision)


@attrs.frozen
class Caller:
    """On whose behalf an action runs, and where its frames go."""

    conn: Requester
    session_id: str | None = None
    agent: str | None = None
    approval_timeout_s: float = 120.0
    reply_to: str | None = None
    # Resource hosts the agent may read; None for a client reading directly.
    agent_resources: tuple[str, ...] | None = None
    # Tools offered to the agent's model; None for a client calling directly (or a chain's step).
    agent_tools: tuple[str, ...] | None = None
    # Taken when the call starts (perform/read) unless the caller brings one (a turn's).
    snapshot: Snapshot | None = None

    @property
    def sub(self) -> str:
        return self.conn.principal.sub

    @property
    def snap(self) -> Snapshot:
        assert self.snapshot is not None, "perform() and read() take the snapshot before anything else"
        return self.snapshot

    def pinned(self) -> Caller:
        """This caller with the configuration in force now, unless it already has one."""
        return self if self.snapshot is not None else attrs.evolve(self, snapshot=Snapshot.of(self.conn.hub))


@attrs.frozen
class Outcome:
    status: ResultStatus
    output: Any
    reason: str = ""
    # Why nothing was decided, for front doors that answer these as protocol errors:
    # "unknown_tool" or "invalid_arguments"; empty otherwise.
    refusal: str = ""
    action_id: str | None = None
    # MCP content blocks of an ``ok`` tool result (``output`` is then their text); None otherwise.
    content: tuple[Any, ...] | None = None

    def for_model(self) -> str:
        """The tool message content a model reads back (chat-completions ``role: tool``)."""
        body: dict[str, Any] = {"status": str(self.status), "output": self.output}
        if self.reason:
            body["reason"] = self.reason
        return json.dumps(body, ensure_ascii=False, default=str)


def argument_errors(tool: Tool | OfferedTool, arguments: Any) -> list[str]:
    """Every way ``arguments`` fails the tool's schema, as readable lines (bounded cost: see argcheck)."""
    if not isinstance(arguments, dict):
        return argcheck.not_an_object(arguments)
    try:
        return argcheck.problems_now(tool.parameters, arguments, argcheck.THREAD_BUDGET_S)
    except argcheck.BudgetExceeded:
        return [argcheck.TOO_COSTLY]


# --- tools ------------------------------------------------------------------------------


async def perform(caller: Caller, name: str, arguments: Any) -> Outcome:
    """Carry out one tool call; never raises for the call's own failures.

    Cancellation (agent stopped, connection closed) propagates after the
    sandbox has killed the tool's processes and any pending approval is closed.
    """
    hub = caller.conn.hub
    caller = caller.pinned()
    status = "cancelled"
    started = time.monotonic()
    try:
        with tracing.span("sconnect.action", kind="tool", tool=name, subject=caller.sub,
                          session_id=caller.session_id, agent=caller.agent):
            outcome = await _perform(caller, name, arguments)
            tracing.note(call_id=outcome.action_id, status=str(outcome.status))
        status = str(outcome.status)
        return outcome
    finally:
        hub.metrics.record_tool_call(
            name, status, time.monotonic() - started,
            configured=name in caller.snap.config.tools, offered=name in caller.conn.client_tools,
        )


async def _perform(caller: Caller, name: str, arguments: Any) -> Outcome:
    hub = caller.conn.hub
    tool = caller.snap.config.tools.get(name)
    offered = caller.conn.client_tools.get(name) if tool is None else None
    action_id = new_id()
    if tool is None and offered is None:
        await _audit(caller, "decision", "tool.call", name, arguments, effect="deny", outcome="unknown_tool")
        return attrs.evolve(
            _refuse(caller, action_id, ActionKind.TOOL, name, arguments, 0, {"error": f"unknown tool {name!r}"}),
            refusal="unknown_tool",
        )
    if caller.agent_tools is not None and name not in caller.agent_tools:
        # A model asked for a tool it was not offered: refused like an unknown one, and the model reads why.
        why = f"tool {name!r} is not one of the tools of agent {caller.agent!r}"
        await _audit(caller, "decision", "tool.call", name, arguments, tool=tool, effect="deny", outcome="deny",
                     details={"reason": why})
        return _refuse(caller, action_id, ActionKind.TOOL, name, arguments, tool.permission_level if tool else 0,
                       {"error": why}, status=ResultStatus.DENIED)
    # Off the loop and under a deadline when it may be costly (engine.server.argcheck).
    problems = await argcheck.tool_argument_problems(
        (tool or offered).parameters, arguments, trusted_schema=tool is not None  # type: ignore[union-attr]
    )
    if problems:
        # The model sees what was wrong and can try again; nothing runs.
        await _audit(
            caller, "decision", "tool.call", name, arguments, tool=tool, outcome="invalid_arguments",
            details={"problems": problems[:10]},
        )
        return attrs.evolve(
            _refuse(
                caller, action_id, ActionKind.TOOL, name, arguments, tool.permission_level if tool else 0,
                {"error": "invalid arguments", "problems": problems},
            ),
            refusal="invalid_arguments",
        )
    if offered is not None:
        return await _client_tool(caller, action_id, offered, arguments)
    assert tool is not None
    with tracing.span("sconnect.decision", tool=name, subject=caller.sub, call_id=action_id) as traced:
        decision = decide(caller.snap.config, caller.sub, caller.conn.principal.roles, "tool.call", tool.name,
                          arguments)
        if traced is not None:
            traced.set_attribute("sconnect.decision", decision.effect)
    tracing.note(call_id=action_id, decision=decision.effect, level=tool.permission_level)
    frame = _action_frame(caller, action_id, ActionKind.TOOL, name, arguments, tool.permission_level, decision)
    kind = kind_of(tool)
    recording: _DecisionRecording | None = None
    if kind.launch is not None and decision.effect == "allow" and not decision.requires_approval \
            and not _starts_warm(tool, kind):
        # Runs at once: its sandbox starts while the decision is committed (the tool gets
        # no input, and the client no agent_action, before it is).
        recording = _DecisionRecording(caller, frame, arguments, decision, tool)
    else:
        await _audit_decision(caller, "tool.call", name, arguments, decision, tool=tool)
        refused = await _authorise(caller, frame, decision, arguments, tool=tool)
        if refused is not None:
            return refused
    started = time.monotonic()
    output: Any
    if kind.serve is not None or kind.compose is not None:
        # Neither takes a run slot. Served in the engine (builtin: a short store write, no sandbox), or
        # made of other tools (a chain): each step is an action of its own through perform(). Steps are
        # the chain's, not the model's: the agent's tool list does not apply to them (the chain tool
        # itself was checked against it); their frames are events, not the reply to a request.
        step_caller = attrs.evolve(caller, agent_tools=None, reply_to=None)
        carry_out: Callable[[], Awaitable[Any]]
        if kind.serve is not None:
            carry_out = functools.partial(kind.serve, caller, tool, arguments)
        else:
            assert kind.compose is not None
            carry_out = functools.partial(kind.compose, tool, arguments, functools.partial(perform, step_caller))
        try:
            done = await carry_out()
        except BaseException as exc:
            # A step reports its own end, a write completed or never began: the tool's end is recorded here.
            if _cancellation(exc):
                with trio.move_on_after(2, shield=True):
                    await _audit(caller, "execution", "tool.call", name, arguments, tool=tool, outcome="cancelled",
                                 duration_ms=(time.monotonic() - started) * 1000, decision=decision)
                    _result(caller, frame, ResultStatus.CANCELLED, {"error": "cancelled while running"}, "cancelled")
            raise
        # A chain whose last step returned content blocks returns them too (by digest in the audit).
        blocks = getattr(done, "content", None)
        digested = await trio.to_thread.run_sync(digests, blocks) if blocks else None
        await _audit(caller, "execution", "tool.call", name, arguments, tool=tool, outcome=str(done.status),
                     duration_ms=(time.monotonic() - started) * 1000, decision=decision,
                     details={"content": digested} if digested else None)
        return _result(caller, frame, done.status, done.output, done.reason, blocks)

    async def sandboxed() -> sandbox.Result:
        # Bounded concurrency: a call past the limits waits for a slot (backpressure, not refusal).
        async with _Slot(hub.tool_runs), _Slot(hub.slots_for(caller.session_id or caller.conn.slot_key)):
            with tracing.span("sconnect.sandbox.run", tool=name, call_id=action_id, subject=caller.sub) as traced:
                result = await run_tool(
                    tool, arguments, workspace=hub.settings.workspace, work_root=hub.settings.work_root,
                    subject=caller.sub, egress=_egress(caller, tool, action_id),
                    go=recording.committed if recording is not None else None,
                )
                if traced is not None:
                    traced.set_attribute("sconnect.status", str(result.status))
                return result

    try:
        result = await (recording.alongside(sandboxed) if recording is not None else sandboxed())
    except sandbox.SandboxError as exc:
        status, output, reason, content = ResultStatus.ERROR, {"error": str(exc)}, str(exc), None
    except BaseException as exc:
        if not _cancellation(exc):
            raise
        # Stopped agent, closed connection, shutdown: the sandbox has killed the tool;
        # the execution is still recorded and reported before the cancellation goes on.
        with trio.move_on_after(2, shield=True):
            await _audit(
                caller, "execution", "tool.call", name, arguments, tool=tool, outcome="cancelled",
                duration_ms=(time.monotonic() - started) * 1000, decision=decision,
            )
            _result(caller, frame, ResultStatus.CANCELLED, {"error": "cancelled while running"}, "cancelled")
        raise
    else:
        status = ResultStatus(result.status)
        reason = "" if status == ResultStatus.OK else result.message
        output = result.output if status == ResultStatus.OK else {
            "error": result.message, "stderr": result.stderr_tail, "exit_code": result.exit_code,
        }
        content = result.content if status == ResultStatus.OK else None
    # Decoding and hashing up to 8 MiB of blocks: off the event loop.
    digested = await trio.to_thread.run_sync(digests, content) if content else None
    await _audit(
        caller, "execution", "tool.call", name, arguments, tool=tool, outcome=str(status),
        duration_ms=(time.monotonic() - started) * 1000, decision=decision,
        # Content blocks by digest and size: the audit log never holds their bytes.
        details={"content": digested} if digested else None,
    )
    return _result(caller, frame, status, output, reason, content)


@attrs.define(eq=False)
class _DecisionRecording:
    """A call's decision record, committed while its sandbox starts.

    :meth:`alongside` runs the call with the commit as a task beside it; the sandbox
    awaits :meth:`committed` before the tool gets any input, and the client gets the
    ``agent_action`` only once the record is on disk.  A commit that fails fails the
    action with its error, whatever the call did meanwhile (it never ran).
    """

    caller: Caller
    frame: AgentAction
    arguments: Any
    decision: Decision
    tool: Tool
    done: trio.Event = attrs.field(factory=trio.Event)
    recorded: bool = False
    error: Exception | None = None

    async def _commit(self) -> None:
        try:
            await _audit_decision(self.caller, "tool.call", self.tool.name, self.arguments, self.decision,
                                  tool=self.tool)
        except Exception as exc:  # noqa: BLE001  # raised to the call by committed() and alongside()
            self.error = exc
        else:
            self.recorded = True
            self.caller.conn.send(self.frame)
        finally:
            self.done.set()

    async def committed(self) -> None:
        """Return once the decision is on disk; raise its error when it could not be written."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        if not self.recorded:
            raise AuditError("the decision record was not committed: nothing runs unrecorded")

    async def alongside(self, call: Callable[[], Awaitable[sandbox.Result]]) -> sandbox.Result:
        """``call()``, with the commit running beside it; its own outcome unwrapped from the nursery."""
        ran: sandbox.Result | None = None
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit)
            try:
                ran = await call()
            except BaseException as exc:  # re-raised below, once the commit has ended
                failure = exc
        if self.error is not None:
            raise self.error
        if failure is not None:
            raise failure
        assert ran is not None
        return ran


def _starts_warm(tool: Tool, kind: ToolKind) -> bool:
    """Whether the call runs in a warm pool's worker, forked ahead: there is no sandbox
    start to overlap with the decision's commit, so the commit comes first, in this task
    (a task and a nursery less on the event loop per call)."""
    return kind.early_start and isolation_for(tool) == "pool"


@attrs.frozen
class _Slot:
    """A slot of a run limit, held for a block: taken at once when one is free (a limiter's
    own ``async with`` passes through the scheduler even then), else waited for in line."""

    limiter: trio.CapacityLimiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            await self.limiter.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.limiter.release()


def _egress(caller: Caller, tool: Tool, action_id: str) -> Egress:
    """Where a call's egress proxy sends its connection records: one audit record
    (kind ``egress``, naming the call) and the egress metrics per connection."""
    hub = caller.conn.hub

    async def on_record(record: Any) -> None:
        hub.metrics.record_egress(tool.name, record.outcome, record.bytes_up, record.bytes_down)
        await _audit(
            caller, "egress", "tool.egress", tool.name, None, tool=tool, outcome=record.outcome,
            duration_ms=record.duration_s * 1000,
            details={"call": action_id, "method": record.method, "host": record.host, "port": record.port,
                     "address": record.address, "bytes_up": record.bytes_up, "bytes_down": record.bytes_down,
                     "reason": record.reason},
        )  # fmt: skip

    return Egress(on_record, hub.settings.egress)


async def _client_tool(caller: Caller, action_id: str, tool: OfferedTool, arguments: Any) -> Outcome:
    """A tool the client runs itself: announce it, then wait for the client's result."""
    conn = caller.conn
    frame = AgentAction(
        action_id=action_id, kind=ActionKind.TOOL, name=tool.name, arguments=arguments,
        level=tool.level or 0, requires_approval=False, approver=Approver.NONE,
        executor=Executor.CLIENT, reason="offered by this client: it runs the tool itself",
        session_id=caller.session_id, reply_to=caller.reply_to,
    )
    await _audit(caller, "decision", "tool.call", tool.name, arguments, effect="allow", outcome="client",
                 details={"executor": "client"})
    waiter: trio.MemorySendChannel[Any]
    waiter, receiver = trio.open_memory_channel[Any](1)
    conn.client_results[action_id] = waiter
    started = time.monotonic()
    outcome = None
    try:
        conn.send(frame)
        with trio.move_on_after(caller.approval_timeout_s):
            result = await receiver.receive()
            outcome = Outcome(ResultStatus(result.status), result.output)
    finally:
        conn.client_results.pop(action_id, None)
    if outcome is None:
        why = f"the client sent no result within {caller.approval_timeout_s:g}s"
        outcome = Outcome(ResultStatus.TIMEOUT, {"error": why}, why)
    await _audit(caller, "execution", "tool.call", tool.name, arguments, outcome=str(outcome.status),
                 duration_ms=(time.monotonic() - started) * 1000, details={"executor": "client"})
    return outcome


async def refuse_hidden(caller: Caller, name: str, arguments: Any) -> None:
    """Record a call to a tool this caller cannot see (denied, level 3, or unknown): nothing runs.

    For front doors that list only what a caller may call and answer anything else as
    an unknown tool, without announcing an action.
    """
    caller = caller.pinned()
    tool = caller.snap.config.tools.get(name)
    await _audit(caller, "decision", "tool.call", name, arguments, tool=tool, effect="deny", outcome="unknown_tool",
                 details={"reason": "not offered to this caller"})


# --- built-in actions (delegation, the session board) ---------------------------------


@attrs.frozen
class Builtin:
    """An action with no tools.d/ file: what the policy decides on, and how the client sees it."""

    action: str  # the policy action: agent.delegate, board.append, resource.read
    target: str  # what is decided on: the asked agent, the board's URI
    kind: ActionKind  # shown as a tool call or a resource read
    name: str  # shown name: ask_agent, post_to_board, board://session
    level: int = 0
    audit_kind: str = "execution"  # the record of its running: execution, or resource_read for a read


# How the approvals of built-in tool actions are audited (their frames name the built-in tool).
BUILTIN_ACTIONS = {ASK_AGENT: "agent.delegate", POST_TO_BOARD: "board.append"}


async def perform_builtin(
    caller: Caller, builtin: Builtin, arguments: dict[str, Any], details: Mapping[str, Any],
    execute: Callable[[str], Awaitable[tuple[ResultStatus, Any, str]]],
) -> Outcome:
    """Carry out a built-in action whose own checks passed (engine/server/delegation.py, board.py).

    Decided as ``builtin.action`` on ``builtin.target`` at ``builtin.level``, shown
    as ``builtin.name``, approved when the decision says so, audited (decision, any
    approval, its running, each with ``details``), then ``execute(action_id)`` does
    it.  Cancellation: the running is recorded and reported as cancelled, then the
    cancellation goes on.
    """
    caller = caller.pinned()
    action_id = new_id()
    decision = decide(caller.snap.config, caller.sub, caller.conn.principal.roles, builtin.action, builtin.target,
                      arguments, level=builtin.level)
    frame = _action_frame(caller, action_id, builtin.kind, builtin.name, arguments, builtin.level, decision)
    await _audit(caller, "decision", builtin.action, builtin.target, arguments, decision=decision,
                 outcome=decision.effect,
                 details={"reason": decision.reason, "approver": decision.approver, "action_id": action_id, **details})
    refused = await _authorise(caller, frame, decision, arguments)
    if refused is not None:
        return refused
    started = time.monotonic()
    try:
        status, output, reason = await execute(action_id)
    except BaseException as exc:
        if _cancellation(exc):
            with trio.move_on_after(2, shield=True):
                await _audit(caller, builtin.audit_kind, builtin.action, builtin.target, arguments,
                             outcome="cancelled", duration_ms=(time.monotonic() - started) * 1000, decision=decision,
                             details={"action_id": action_id, **details})
                _result(caller, frame, ResultStatus.CANCELLED, {"error": "cancelled while running"}, "cancelled")
        raise
    await _audit(caller, builtin.audit_kind, builtin.action, builtin.target, arguments, outcome=str(status),
                 decision=decision, duration_ms=(time.monotonic() - started) * 1000,
                 details={"action_id": action_id, **details})
    return _result(caller, frame, status, output, reason)


async def refuse_builtin(
    caller: Caller, builtin: Builtin, arguments: Any, why: str, status: ResultStatus, details: Mapping[str, Any],
) -> Outcome:
    """A built-in action refused before any policy decision (not a delegate, a loop, no board): audited, shown."""
    caller = caller.pinned()
    await _audit(caller, "decision", builtin.action, builtin.target, arguments, effect="deny", outcome=str(status),
                 details={"reason": why, **details})
    shown = arguments if builtin.kind == ActionKind.TOOL else {"uri": builtin.name}
    return _refuse(caller, new_id(), builtin.kind, builtin.name, shown, builtin.level, {"error": why}, status=status)


# --- resources --------------------------------------------------------------------------


async def read(caller: Caller, uri: str) -> tuple[Outcome, Content | None]:
    """Read one resource for the caller: resolve strictly, decide, ask if needed, read, audit.

    Returns the outcome (as an agent sees it) and the content when the read succeeded.
    A direct client read (no session) sends no action frames unless approval is needed;
    an agent's read is an ``agent_action`` of kind ``resource`` like a tool call.
    """
    hub = caller.conn.hub
    caller = caller.pinned()
    outcome: Outcome | None = None
    try:
        with tracing.span("sconnect.action", kind="resource", subject=caller.sub, session_id=caller.session_id,
                          agent=caller.agent):
            outcome, content = await _read(caller, uri)
            tracing.note(call_id=outcome.action_id, status=str(outcome.status))
        return outcome, content
    finally:
        scheme = uri.split("://", 1)[0] if "://" in uri else None
        known = scheme if scheme in ("file", "db", "api", "memory") else None
        hub.metrics.record_resource_read(known, str(outcome.status) if outcome else "cancelled")


async def _read(caller: Caller, uri: str) -> tuple[Outcome, Content | None]:
    resources = caller.snap.resources
    action_id = new_id()
    arguments = {"uri": uri}
    announce = caller.session_id is not None
    try:
        parsed, _host = resources.resolve(uri)
    except ResourceError as exc:
        await _audit(
            caller, "resource_read", "resource.read", uri, None, outcome=exc.code, details={"error": exc.message}
        )
        return _refuse_read(caller, action_id, uri, exc.code, exc.message, announce)
    if caller.agent_resources is not None and parsed.key not in caller.agent_resources:
        why = f"agent {caller.agent} may not read {parsed.key}"
        await _audit(
            caller, "decision", "resource.read", uri, None, effect="deny", outcome="deny", details={"reason": why}
        )
        return _refuse_read(caller, action_id, uri, "forbidden", why, announce)
    decision = decide(caller.snap.config, caller.sub, caller.conn.principal.roles, "resource.read", str(parsed))
    frame = _action_frame(caller, action_id, ActionKind.RESOURCE, uri, arguments, 0, decision)
    await _audit_decision(caller, "resource.read", uri, None, decision)
    if decision.effect == "deny" and not announce:
        return Outcome(ResultStatus.DENIED, {"error": decision.reason, "code": "forbidden"}, decision.reason), None
    if announce or decision.requires_approval or decision.effect == "deny":
        refused = await _authorise(caller, frame, decision, arguments)
        if refused is not None:
            return refused, None
    started = time.monotonic()
    try:
        content = await resources.read(uri, Reader(caller.sub, caller.agent, caller.conn.hub.store))
    except ResourceError as exc:
        await _audit(caller, "resource_read", "resource.read", uri, None, outcome=exc.code, decision=decision,
                     duration_ms=(time.monotonic() - started) * 1000, details={"error": exc.message})
        output = {"error": exc.message, "code": exc.code}
        status = ResultStatus.TIMEOUT if exc.code == "timeout" else ResultStatus.ERROR
        if announce or decision.requires_approval:
            return _result(caller, frame, status, output, exc.message), None
        return Outcome(status, output, exc.message), None
    await _audit(caller, "resource_read", "resource.read", uri, None, outcome="ok", decision=decision,
                 duration_ms=(time.monotonic() - started) * 1000,
                 details={"mime_type": content.mime_type, "truncated": content.truncated})
    output = content_output(content)
    if announce or decision.requires_approval:
        return _result(caller, frame, ResultStatus.OK, output, ""), content
    return Outcome(ResultStatus.OK, output), content


def content_output(content: Content) -> dict[str, Any]:
    import base64

    body: dict[str, Any] = {"uri": content.uri, "mime_type": content.mime_type, "truncated": content.truncated}
    if isinstance(content.data, str):
        body["content"] = content.data
    else:
        body["content_base64"] = base64.b64encode(content.data).decode("ascii")
    return body


def _refuse_read(
    caller: Caller, action_id: str, uri: str, code: str, message: str, announce: bool
) -> tuple[Outcome, None]:
    status = ResultStatus.DENIED if code == "forbidden" else ResultStatus.ERROR
    output = {"error": message, "code": code}
    if announce:
        return _refuse(caller, action_id, ActionKind.RESOURCE, uri, {"uri": uri}, 0, output, status=status), None
    return Outcome(status, output, message), None


# --- shared steps -----------------------------------------------------------------------


def _action_frame(
    caller: Caller, action_id: str, kind: ActionKind, name: str, arguments: Any, level: int, decision: Decision
) -> AgentAction:
    return AgentAction(
        action_id=action_id, kind=kind, name=name, arguments=arguments, level=level,
        requires_approval=decision.requires_approval, approver=Approver(decision.approver),
        executor=Executor.SERVER, reason=decision.reason, session_id=caller.session_id, reply_to=caller.reply_to,
    )


async def _authorise(
    caller: Caller, frame: AgentAction, decision: Decision, arguments: Any, *, tool: Tool | None = None
) -> Outcome | None:
    """Announce the action and get it through its decision: None when it may run."""
    if decision.effect == "deny":
        caller.conn.send(frame)
        return _result(caller, frame, ResultStatus.DENIED, {"error": decision.reason}, decision.reason)
    if not decision.requires_approval:
        caller.conn.send(frame)
        return None
    grant = await grants.covering(caller, frame, decision, arguments, tool)
    if grant is not None:
        # Remembered: runs without asking; the action and its audit record name the grant.
        frame = attrs.evolve(
            frame, requires_approval=False, grant=GrantRef(grant_id=grant.grant_id, made_by=grant.made_by,
                                                           scope=grant.scope),
            reason=f"{frame.reason}; covered by grant {grant.grant_id} made by {grant.made_by}",
        )
        caller.conn.send(frame)
        await _audit(caller, "approval", _action_name(frame), frame.name, arguments, tool=tool, outcome="approved",
                     decided_by="person", approver=grant.made_by,
                     details={"grant_id": grant.grant_id, "grant_made_by": grant.made_by, "grant_scope": grant.scope})
        return None
    pending = PendingAction(
        frame=frame, requester=caller.sub, approver=decision.approver,  # type: ignore[arg-type]
        self_approval=decision.self_approval,
        remember=grants.remember_context(caller, frame, decision, arguments, tool),
    )
    return await _await_approval(caller, pending, arguments, tool)


async def _await_approval(caller: Caller, pending: PendingAction, arguments: Any, tool: Tool | None) -> Outcome | None:
    """Wait for the answer; None when approved, else the outcome to report.

    The pending action is a durable record in the store (what was asked, a digest of
    the exact arguments, who may answer, until when); the store's atomic transition
    has the last word, so an answer that arrives after the expiry runs nothing.
    """
    conn, timeout_s = caller.conn, caller.approval_timeout_s
    hub = conn.hub
    frame = pending.frame
    # Recorded before anybody can see the action, so that no answer can arrive first.
    await hub.store.add_pending_action(
        action_id=frame.action_id, session_id=frame.session_id, subject=pending.requester, kind=str(frame.kind),
        name=frame.name, arguments=frame.arguments, level=frame.level, approver=pending.approver,
        expires_at=time.time() + timeout_s, secret=tool.secret_arguments if tool else (),
    )
    # Per-requester cap, counted with no await before the add below (concurrent calls cannot overshoot).
    limit = hub.settings.max_pending_approvals_per_subject
    waiting = sum(1 for p in hub.approvals.pending.values() if p.requester == pending.requester)
    if waiting >= limit:
        why = (f"{pending.requester} already has {waiting} actions waiting for approval, the maximum "
               "(limit pending_approvals_per_subject): wait for answers first")
        conn.send(frame)
        await hub.store.decide_action(frame.action_id, "cancelled", None, why)
        await _audit(caller, "approval", _action_name(frame), frame.name, arguments, tool=tool,
                     outcome="limit_exceeded", details={"reason": why})
        return _result(caller, frame, ResultStatus.LIMIT_EXCEEDED, {"error": why, "code": "rate_limited"}, why)
    pending.expires_at = trio.current_time() + timeout_s
    hub.approvals.add(pending)
    try:
        conn.send(frame)
        if pending.approver == "admin":
            for other in hub.connections:
                if other is not conn and pending.may_answer(other.principal.sub, other.principal.roles):
                    other.send(frame)
        with tracing.span("sconnect.approval.wait", tool=frame.name, call_id=frame.action_id, subject=caller.sub,
                          approver=pending.approver) as traced:
            with trio.move_on_after(timeout_s):
                await pending.event.wait()
            if traced is not None:
                traced.set_attribute("sconnect.outcome", pending.status)
        # Recorded in the store, which has the last word (engine.server.approvals.ApprovalBus).
        await hub.approval_bus.settle(hub, pending)
    finally:
        if pending.status == "pending":
            # Cancelled while waiting: the agent was stopped or the connection closed.
            hub.approvals.close(pending, "cancelled", "the request was cancelled")
            with trio.move_on_after(2, shield=True):
                await hub.store.decide_action(frame.action_id, "cancelled", None, "the request was cancelled")
                await _audit(caller, "approval", _action_name(frame), frame.name, arguments, tool=tool,
                             outcome="cancelled")
                _result(caller, frame, ResultStatus.CANCELLED, {"error": "cancelled while waiting for approval"},
                        "cancelled")
    by_person = pending.status in ("approved", "denied")
    await _audit(
        caller, "approval", _action_name(frame), frame.name, arguments, tool=tool, outcome=pending.status,
        decided_by="person" if by_person else "rule", approver=pending.decided_by if by_person else None,
        details={"reason": pending.reason} if pending.reason else None,
    )
    if pending.status == "approved":
        if pending.grant_plan is not None:
            await grants.make(caller, pending.grant_plan, conn.audit_context)
        return None
    if pending.status == "denied":
        why = f"denied by {pending.decided_by}" + (f": {pending.reason}" if pending.reason else "")
        return _result(caller, frame, ResultStatus.DENIED, {"error": why}, why)
    if pending.status == "cancelled":
        why = pending.reason or "cancelled"
        return _result(caller, frame, ResultStatus.CANCELLED, {"error": why}, why)
    why = f"no approval within {timeout_s:g}s"
    return _result(caller, frame, ResultStatus.TIMEOUT, {"error": why}, why)


def _cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's cancellation, bare or grouped by the nurseries it crossed."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _matched, rest = exc.split(trio.Cancelled)
        return rest is None
    return False


def _action_name(frame: AgentAction) -> str:
    if frame.kind == ActionKind.TOOL and frame.name in BUILTIN_ACTIONS:
        return BUILTIN_ACTIONS[frame.name]
    return "resource.read" if frame.kind == ActionKind.RESOURCE else "tool.call"


def _result(
    caller: Caller, frame: AgentAction, status: ResultStatus, output: Any, reason: str,
    content: tuple[Any, ...] | None = None,
) -> Outcome:
    caller.conn.send(
        AgentResult(
            action_id=frame.action_id, status=status, output=output,
            session_id=frame.session_id, reply_to=frame.reply_to, content=list(content) if content else None,
        )
    )
    return Outcome(status, output, reason, action_id=frame.action_id, content=content)


def _refuse(
    caller: Caller, action_id: str, kind: ActionKind, name: str, arguments: Any, level: int,
    output: Mapping[str, Any], *, status: ResultStatus = ResultStatus.ERROR,
) -> Outcome:
    """An action refused before any policy decision: still shown to the client, as action and result."""
    frame = AgentAction(
        action_id=action_id, kind=kind, name=name,
        arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
        level=level, requires_approval=False, approver=Approver.NONE, executor=Executor.SERVER,
        reason=str(output.get("error", "")), session_id=caller.session_id, reply_to=caller.reply_to,
    )
    caller.conn.send(frame)
    return _result(caller, frame, status, dict(output), str(output.get("error", "")))


async def _audit_decision(
    caller: Caller, action: str, target: str, arguments: Any, decision: Decision, *, tool: Tool | None = None
) -> None:
    await _audit(caller, "decision", action, target, arguments, tool=tool, decision=decision, outcome=decision.effect,
                 details={"reason": decision.reason, "approver": decision.approver})


async def _audit(
    caller: Caller, kind: str, action: str, target: str, arguments: Any, *, tool: Tool | None = None,
    decision: Decision | None = None, effect: str | None = None, outcome: str | None = None,
    decided_by: str | None = None, approver: str | None = None, duration_ms: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """One audit record, committed before this returns (so before any result is sent)."""
    hub = caller.conn.hub
    context = caller.conn.audit_context
    await hub.audit.record(
        AuditEvent(
            kind=kind, subject=caller.sub, session_id=caller.session_id, agent=caller.agent, action=action,
            target=target, arguments=arguments if isinstance(arguments, dict) else None,
            secret=tool.secret_arguments if tool else (),
            effect=decision.effect if decision else effect,
            rule_ids=decision.rule_ids if decision else (),
            decided_by=decided_by or ("rule" if kind == "decision" else None), approver=approver,
            outcome=outcome, duration_ms=duration_ms,
            policy_revision=(caller.snapshot or Snapshot.of(hub)).policy_revision,
            details={**context, **(details or {})},
        )
    )
