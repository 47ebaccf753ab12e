"""The ``command`` tool kind: a program run from its argv (no shell) in the tool's sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.checks import DEFAULT_TOOL_PATH, command_problem
from ..config.model import Tool
from ..config.tool_kinds import ToolKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem

if TYPE_CHECKING:
    import sandbox

SCHEMA: Mapping[str, Any] = {
    "type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
    "description": "argv to execute (no shell). Exactly one of command and python.",
}


def _check(tool: Tool, doc: Document, root: Path) -> tuple[Tool, list[ConfigProblem]]:
    """The program exists (an absolute path, or found on the tool's own PATH)."""
    problem = command_problem(tool.command[0], tool.sandbox.env.get("PATH", DEFAULT_TOOL_PATH))
    return tool, [doc.problem(["command", 0], problem)] if problem else []


async def launch(tool: Tool, arguments: Any, *, workspace: Path, work_root: Path) -> sandbox.Result:
    """One call in the tool's sandbox (engine.toolrun: limits, workspace quota)."""
    from ..toolrun import run_program  # the sandbox loads when a tool runs, not when config loads

    return await run_program(tool, arguments, workspace=workspace, work_root=work_root)


KIND = register(ToolKind(
    name="command", schema=SCHEMA, hint="'command' (an argv list)",
    describe=lambda tool: " ".join(tool.command), check=_check, launch=launch, early_start=True,
))
