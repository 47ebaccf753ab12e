"""Chain tools: a tools.d/ file with ``chain:`` runs its steps, each a full action.

A chain is decided, approved and audited as a tool of its own (its level is at
least its highest step's: ``check`` refuses less).  Then each step goes
through :func:`engine.server.actions.perform` like any other tool call, for the
same caller: its own decision, approval, sandbox run and audit records, its own
``agent_action`` / ``agent_result`` frames.  Nothing here decides or runs
anything itself.

Arguments: each step's arguments are the chain file's templates filled from
``{"args": <the chain's arguments>, "steps": {<index and id>: {"result": output,
"status": status}}}`` (the syntax of :mod:`engine.models.template`).  A value
that is exactly one placeholder keeps the JSON type of what it names (a number
stays a number, an object an object); otherwise the text is filled in.

Stopping: the first step that is not ``ok`` (denied, error, timeout, ...)
ends the chain with that status and an output naming the step; so does a
placeholder that names nothing at run time (an earlier step's output lacks the
field), before the step is asked for.  The chain's result is its last step's
output.

Cancellation: a cancelled step is reported by ``perform`` (its processes
killed, its execution recorded); the cancellation then ends the chain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from ..config.model import Tool
from ..models import template
from ..protocol import ResultStatus


class StepOutcome(Protocol):
    """What a step's action ended with (an :class:`engine.server.actions.Outcome`)."""

    @property
    def status(self) -> ResultStatus: ...

    @property
    def output(self) -> Any: ...

    @property
    def reason(self) -> str: ...


#: Carries out one step, ``(tool name, arguments) -> outcome``: a full action of its own
#: (``actions.perform`` for the chain's caller). Passed in, so this module imports no action code.
Step = Callable[[str, Mapping[str, Any]], Awaitable[StepOutcome]]


@attrs.frozen
class ChainOutcome:
    status: ResultStatus
    output: Any
    reason: str = ""


async def run_chain(perform: Step, tool: Tool, arguments: Mapping[str, Any]) -> ChainOutcome:
    """Run ``tool``'s steps in order, each through ``perform`` (the chain itself is already authorised)."""
    context: dict[str, Any] = {"args": dict(arguments), "steps": {}}
    output: Any = None
    for index, step in enumerate(tool.chain):
        label = step.label(index)
        try:
            step_arguments = template.fill(dict(step.arguments), context)
        except template.Missing as missing:
            why = f"step {label}: placeholder {{{missing}}} names nothing"
            return ChainOutcome(ResultStatus.ERROR, {"error": why, "step": index, "tool": step.tool}, why)
        outcome = await perform(step.tool, step_arguments)
        record = {"result": outcome.output, "status": str(outcome.status)}
        context["steps"][str(index)] = record
        if step.id is not None:
            context["steps"][step.id] = record
        if outcome.status != ResultStatus.OK:
            why = f"step {label} {outcome.status}: {outcome.reason or _error_of(outcome.output)}".rstrip(": ")
            return ChainOutcome(
                outcome.status, {"error": why, "step": index, "tool": step.tool, "output": outcome.output}, why
            )
        output = outcome.output
    return ChainOutcome(ResultStatus.OK, output)


def _error_of(output: Any) -> str:
    if isinstance(output, Mapping) and isinstance(output.get("error"), str):
        return str(output["error"])
    return ""
