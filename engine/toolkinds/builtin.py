"""The ``builtin`` tool kind: a tool the engine carries out itself (``remember``, ``forget``).

A tools.d/ file declares one with ``builtin: NAME`` and a ``permission_level``, and is then
listed, decided, approved and audited like any tool; only its execution differs: it is
served in the engine for the caller (:func:`engine.memory.tools.run_builtin`: a short
store write), not run in a sandbox, and takes no run slot.  Its parameters are fixed here
(the file has none: ``fill`` puts them in before the file is structured), so that the
runtime can rely on them.  It has no ``sandbox`` and no ``output``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..config.model import Tool
from ..config.tool_kinds import ToolKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem

if TYPE_CHECKING:
    from ..memory.tools import Done
    from ..server.actions import Caller

PARAMETERS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "remember": {
        "type": "object",
        "properties": {
            "fact": {
                "type": "string", "minLength": 1, "maxLength": 4096,
                "description": "One short fact about the user worth knowing in later conversations, "
                               "as a full sentence (e.g. 'Prefers answers in French.').",
            },
        },
        "required": ["fact"],
        "additionalProperties": False,
    },
    "forget": {
        "type": "object",
        "properties": {
            "memory_id": {"type": "string", "minLength": 1, "maxLength": 128,
                          "description": "The id of a memory, as listed with the memories."},
        },
        "required": ["memory_id"],
        "additionalProperties": False,
    },
})

SCHEMA: Mapping[str, Any] = {
    "enum": list(PARAMETERS),
    "description": "Instead of a program: a tool the engine carries out itself, with fixed parameters: remember "
    "(keep a fact about the calling user for the calling agent's later sessions) or forget (delete one of them). "
    "Needs the agent's memory on.",
}
#: Its parameters are the engine's; its result is the engine's own JSON (schemas.py words the refusal).
FILE_RULES: Mapping[str, Any] = {"required": ["permission_level"], "properties": {"output": {"not": {}}}}


def _fill(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The built-in's parameters, which the file does not write (a file that does is told by ``_check``)."""
    if "parameters" in data or data.get("builtin") not in PARAMETERS:
        return data
    return {**data, "parameters": dict(PARAMETERS[data["builtin"]])}


def _check(tool: Tool, doc: Document, root: Path) -> tuple[Tool, list[ConfigProblem]]:
    if isinstance(doc.data, dict) and "parameters" in doc.data:
        return tool, [doc.problem(["parameters"], f"the parameters of the built-in {tool.builtin!r} are the "
                                                  "engine's: remove 'parameters'", key=True)]
    return tool, []


async def _serve(caller: Caller, tool: Tool, arguments: dict[str, Any]) -> Done:
    from ..memory.tools import run_builtin  # the store's memory code loads when one is called

    return await run_builtin(caller, tool, arguments)


KIND = register(ToolKind(
    name="builtin", schema=SCHEMA, hint="'builtin' (remember or forget, carried out by the engine)",
    describe=lambda tool: f"built in: {tool.builtin} (the agent's memory)",
    check=_check, serve=_serve, fill=_fill, file_rules=FILE_RULES, exclusive=("sandbox",),
))
