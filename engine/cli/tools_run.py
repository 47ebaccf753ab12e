"""``sconnect tools run``: one tool call from the command line, through the server's own action path.

Nothing runs without a decision and an audit record, from here either: the call is made
as a subject (``--sub``/``--role``; by default the operator, ``operator:<login>`` with the
role ``admin``), decided by the policy, approved, sandboxed and audited exactly as a
``tool_call`` frame would be, in that subject's workspace. What needs approval:

- by the user (level 1): the requester is the person at this terminal, who answers
  ``approve? [y/N]`` (``--yes`` answers yes for scripts; without a terminal and without
  ``--yes`` the call is refused);
- by an admin (level 2): nobody else is here to approve, so the call is refused (and
  audited as cancelled) unless a policy rule gives this subject ``self_approval``, in
  which case the operator answers as for level 1. Run it through the server instead
  (``sconnect chat`` ``/call``), where another admin can approve;
- level 3 runs only where a policy rule names the tool and this subject.

The state directory's audit log has one writer at a time: while a server runs on it, this
command refuses and says to go through the server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

from ..audit import AuditLog
from ..audit._errors import AuditLockedError
from ..auth import AuthSettings, Principal
from ..config import Config, load_config, resolve_config_dir
from ..printable import printable
from ..protocol import AgentAction, OfferedTool, ProtocolError, ServerFrame
from ..server.actions import Caller, Outcome, argument_errors, perform
from ..server.app import prepare_state_dir
from ..server.hub import Hub
from ..server.settings import ServerSettings
from ..store import Store
from .output import print_json

#: Who ``tools run`` acts as when no ``--sub`` is given.
OPERATOR_PREFIX = "operator:"


def default_subject() -> str:
    return f"{OPERATOR_PREFIX}{getpass.getuser()}"


@attrs.define(eq=False)
class CommandLineRequester:
    """The person at this terminal, as a front door of the action path (see ``Requester``)."""

    hub: Hub
    principal: Principal
    events: trio.MemorySendChannel[ServerFrame]
    client_tools: dict[str, OfferedTool] = attrs.field(factory=dict)
    client_results: dict[str, trio.MemorySendChannel[Any]] = attrs.field(factory=dict)
    slot_key: str = "cli"
    audit_context: dict[str, Any] = attrs.field(factory=lambda: {"transport": "cli"})

    def send(self, frame: ServerFrame) -> None:
        # One call sends at most a handful of frames; the channel is sized for them.
        self.events.send_nowait(frame)


async def _answer_approvals(
    requester: CommandLineRequester, events: trio.MemoryReceiveChannel[ServerFrame], assume_yes: bool
) -> None:
    """Show the call's action; answer its approval from this terminal, or refuse it."""
    hub, principal = requester.hub, requester.principal
    async for frame in events:
        if not isinstance(frame, AgentAction):
            continue
        print(f"[action] {frame.name} {printable(json.dumps(frame.arguments, ensure_ascii=False))} "
              f"level {frame.level}: {printable(frame.reason)}", file=sys.stderr)
        pending = hub.approvals.pending.get(frame.action_id)
        if not frame.requires_approval or pending is None:
            continue
        if not pending.may_answer(principal.sub, principal.roles):
            hub.approvals.close(
                pending, "cancelled",
                "it needs an admin's approval and nobody else can give it from the command line: "
                "call it through the server (sconnect chat, /call) so that another admin can approve",
            )
            continue
        approved = assume_yes or await _ask(f"approve {frame.name} as {principal.sub}? [y/N] ")
        try:
            hub.approvals.answer(frame.action_id, approved, principal.sub, principal.roles,
                                 None if approved else "declined at the terminal", frame.id)
        except ProtocolError as exc:
            print(f"sconnect: {exc}", file=sys.stderr)


async def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{prompt}no (stdin is not a terminal; --yes approves)", file=sys.stderr)
        return False
    print(prompt, end="", file=sys.stderr, flush=True)
    # Reading a terminal blocks: off the event loop, abandoned if the call ends first.
    answer = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return answer.strip().lower() in ("y", "yes")


async def call_once(
    config: Config, state_dir: Path, principal: Principal, name: str, arguments: Any, *, assume_yes: bool
) -> Outcome:
    """Decide, approve, run and audit one call of ``name`` as ``principal``; the outcome."""
    settings = ServerSettings(config_dir=config.root, state_dir=state_dir, auth=AuthSettings())
    prepare_state_dir(state_dir)
    async with await AuditLog.open(state_dir) as audit, \
            await Store.open(settings.database, digest_key=audit.digest_key) as store:
        hub = Hub(settings=settings, config=config, store=store, audit=audit)
        send, receive = trio.open_memory_channel[ServerFrame](16)
        requester = CommandLineRequester(hub, principal, send)
        async with trio.open_nursery() as root:
            await root.start(audit.run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_approvals, requester, receive, assume_yes)
                caller = Caller(requester, approval_timeout_s=settings.approval_timeout_s)
                outcome = await perform(caller, name, arguments)
                nursery.cancel_scope.cancel()
            root.cancel_scope.cancel()
    return outcome


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the call's status is ok, 1 when it ran and failed or was refused, 2 when
    the request itself is wrong (unknown tool, bad JSON, arguments that fail the schema,
    the state directory in use by a server)."""
    config = load_config(resolve_config_dir(args.config))
    tool = config.tools.get(args.name)
    if tool is None:
        print(f"sconnect: no tool named {args.name!r} (known: {', '.join(sorted(config.tools))})", file=sys.stderr)
        return 2
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        print(f"sconnect: --args is not JSON: {exc} (expected an object such as '{{\"text\": \"hi\"}}')",
              file=sys.stderr)
        return 2
    if not isinstance(arguments, dict):
        print(f"sconnect: --args must be a JSON object, not {type(arguments).__name__}", file=sys.stderr)
        return 2
    problems = argument_errors(tool, arguments)
    if problems:
        print(f"sconnect: invalid arguments for {tool.name}:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    sub = args.sub or default_subject()
    roles = frozenset(args.role or ("admin",))
    principal = Principal(sub=sub, roles=roles, expires_at=float("inf"), claims={"sub": sub})
    state_dir = Path(args.state_dir).resolve()
    try:
        outcome = trio.run(lambda: call_once(config, state_dir, principal, tool.name, arguments, assume_yes=args.yes))
    except AuditLockedError:
        print(f"sconnect: a server is running on {state_dir} (it holds the audit log): call the tool through it, "
              f"e.g. `sconnect chat ...` then `/call {tool.name} {json.dumps(arguments)}`", file=sys.stderr)
        return 2
    if args.json:
        shown = {"status": str(outcome.status), "output": outcome.output, "reason": outcome.reason,
                 "action_id": outcome.action_id, "subject": sub}
        if outcome.content is not None:
            shown["content"] = list(outcome.content)  # MCP content blocks, as the tool returned them
        print_json(shown)
    else:
        print(f"{tool.name}: {outcome.status}" + (f" ({printable(outcome.reason)})" if outcome.reason else ""),
              file=sys.stderr)
        output = outcome.output
        if str(outcome.status) == "ok":
            print(output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False))
        elif args.verbose and isinstance(output, dict) and output.get("stderr"):
            print(printable(str(output["stderr"]), keep_newlines=True), file=sys.stderr)
    return 0 if str(outcome.status) == "ok" else 1


__all__ = ["CommandLineRequester", "call_once", "default_subject", "run"]
