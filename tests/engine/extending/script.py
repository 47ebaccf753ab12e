"""The ``script`` tool kind: a shell script written in the tool's file, run by /bin/sh in the
tool's sandbox (arguments as JSON on stdin, the result as JSON on stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from engine.config.model import Tool
from engine.config.tool_kinds import ToolKind
from engine.config.yamldoc import Document
from engine.errors import ConfigProblem

if TYPE_CHECKING:
    import sandbox

SCHEMA = {
    "type": "string", "minLength": 1,
    "description": "A /bin/sh script: the arguments arrive as JSON on stdin, it prints its JSON result.",
}


def check(tool: Tool, doc: Document, root: Path) -> tuple[Tool, list[ConfigProblem]]:
    """What the schema cannot say: here, that the script uses no interpreter line of its own."""
    if tool.options.startswith("#!"):
        return tool, [doc.problem(["script"], "runs with /bin/sh: leave out the #! line")]
    return tool, []


async def launch(tool: Tool, arguments: Any, *, workspace: Path, work_root: Path) -> sandbox.Result:
    from engine.toolrun import run_program

    program = attrs.evolve(tool, command=("/bin/sh", "-c", tool.options))
    return await run_program(program, arguments, workspace=workspace, work_root=work_root)


KIND = ToolKind(
    name="script", schema=SCHEMA, hint="'script' (a /bin/sh script)", options_class=str,
    describe=lambda tool: "sh script", check=check, launch=launch,
)
