"""The ``chain`` tool kind: a tools.d/ file with ``chain:`` runs its steps, each a full action.

This module is the whole kind (registered in :mod:`engine.config.tool_kinds`): the
schema of ``chain:``, its checks (step ids and placeholders in the file; each step's
tool declared, not a chain, and at most the chain's level, across files) and its
runtime, :func:`run_chain`.

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
from pathlib import Path
from typing import Any, Protocol

import attrs

from ..config.checks import template_fields
from ..config.model import Tool
from ..config.tool_kinds import PROGRAM_RULES, ToolKind, register
from ..config.yamldoc import Document, PathSegment
from ..errors import ConfigProblem
from ..models import template
from ..protocol import ResultStatus
from ..suggest import unknown_name

SCHEMA: Mapping[str, Any] = {
    "type": "array", "minItems": 1, "maxItems": 16,
    "description": "Instead of a program: steps run in order, each a full action (decision, approval, sandbox, "
    "audit) of the tool it names; the first failed or denied step stops the chain. The chain's result is its "
    "last step's output. Exactly one of command, python and chain.",
    "items": {
        "type": "object", "additionalProperties": False, "required": ["tool"],
        "properties": {
            "id": {"$ref": "common.json#/$defs/name",
                   "description": "A name later steps can use instead of the index: {steps.ID.result}. Default: none."},
            "tool": {"$ref": "common.json#/$defs/name", "description": "The tool this step calls (not a chain)."},
            "arguments": {"type": "object", "description": "The step's arguments; strings may use {args.NAME} and "
                          "{steps.N.result.FIELD} (N: an earlier step's index or id). Default: none."},
        },
    },
}


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
    # The last step's MCP content blocks, when it returned some: the chain's result is its last step's.
    content: tuple[Any, ...] | None = None


async def run_chain(perform: Step, tool: Tool, arguments: Mapping[str, Any]) -> ChainOutcome:
    """Run ``tool``'s steps in order, each through ``perform`` (the chain itself is already authorised)."""
    context: dict[str, Any] = {"args": dict(arguments), "steps": {}}
    output: Any = None
    content: tuple[Any, ...] | None = None
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
        output, content = outcome.output, getattr(outcome, "content", None)
    return ChainOutcome(ResultStatus.OK, output, content=content)


def _error_of(output: Any) -> str:
    if isinstance(output, Mapping) and isinstance(output.get("error"), str):
        return str(output["error"])
    return ""


# --- checks ---------------------------------------------------------------------------


def chain_problems(tool: Tool, doc: Document) -> list[ConfigProblem]:
    """A chain's step ids and placeholders: each names an argument or an earlier step."""
    problems: list[ConfigProblem] = []
    properties = tool.parameters.get("properties")
    arguments = set(properties) if isinstance(properties, Mapping) else None
    earlier: set[str] = set()
    for index, step in enumerate(tool.chain):
        where: list[PathSegment] = ["chain", index]
        if step.id is not None and (step.id in earlier or step.id.isdigit()):
            problems.append(doc.problem([*where, "id"], f"step id {step.id!r} is already used by an earlier step"))
        for key, field, error in _step_fields(step.arguments):
            if error:
                problems.append(doc.problem([*where, "arguments", key], f"not a valid template: {error}"))
                continue
            why = _chain_field_problem(field, arguments, earlier)
            if why:
                problems.append(doc.problem([*where, "arguments", key], f"placeholder {{{field}}} {why}"))
        earlier.add(str(index))
        if step.id is not None:
            earlier.add(step.id)
    return problems




def _step_fields(arguments: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(argument, field, template error) for every placeholder in a step's argument values."""
    found = []
    for key, value in arguments.items():
        for text in _strings(value):
            try:
                found += [(key, field, "") for field in template_fields(text)]
            except ValueError as exc:
                found.append((key, "", str(exc)))
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    return []


def _chain_field_problem(field: str, arguments: set[str] | None, earlier: set[str]) -> str:
    parts = field.split(".")
    if parts[0] == "args":
        if len(parts) < 2:
            return "names no argument: write {args.NAME}"
        if arguments is not None and parts[1] not in arguments:
            return f"names no argument of this tool (its parameters: {', '.join(sorted(arguments)) or 'none'})"
        return ""
    if parts[0] == "steps":
        if len(parts) < 3 or parts[2] not in ("result", "status"):
            return "must be {steps.N.result...} or {steps.N.status}"
        if parts[1] not in earlier:
            return f"names no earlier step (earlier: {', '.join(sorted(earlier)) or 'none'})"
        return ""
    return "names nothing: placeholders start with args. or steps."


def check_chain_references(
    tool: Tool, doc: Document, tools: Mapping[str, Tool], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """Each step's tool is declared and is not a chain; the chain's level is at least each step's."""
    failed = failed or {}
    problems = []
    highest: tuple[int, str] | None = None
    for index, step in enumerate(tool.chain):
        where: list[PathSegment] = ["chain", index, "tool"]
        target = tools.get(step.tool)
        if target is None:
            if step.tool in failed:
                problems.append(doc.problem(where, f"tool {step.tool!r} did not load (see {failed[step.tool]})"))
            else:
                others = (name for name in tools if name != tool.name)
                problems.append(doc.problem(where, unknown_name("tool", step.tool, others)))
            continue
        if target.chain:
            problems.append(doc.problem(where, f"tool {step.tool!r} is a chain itself: a step must be a program"))
        if highest is None or target.permission_level > highest[0]:
            highest = (target.permission_level, step.tool)
    if highest is not None and tool.permission_level < highest[0]:
        problems.append(doc.problem(["permission_level"], (
            f"{tool.permission_level} is below the level of step tool {highest[1]!r} ({highest[0]}): "
            "a chain's level must be at least its highest step's"
        )))
    return problems


def _check(tool: Tool, doc: Document, root: Path) -> tuple[Tool, list[ConfigProblem]]:
    return tool, chain_problems(tool, doc)


async def _compose(tool: Tool, arguments: Mapping[str, Any], perform: Step) -> ChainOutcome:
    return await run_chain(perform, tool, arguments)


KIND = register(ToolKind(
    name="chain", schema=SCHEMA, hint="'chain' (a list of steps, with no sandbox of its own)",
    describe=lambda tool: "chain " + " -> ".join(step.tool for step in tool.chain),
    check=_check, check_references=check_chain_references, compose=_compose, exclusive=("sandbox",),
    # A chain's result is its last step's: it has no output of its own to declare.
    file_rules={**PROGRAM_RULES, "properties": {"output": {"not": {}}}},
))
