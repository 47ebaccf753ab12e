"""The ``mcp_server`` tool kind: an MCP server run over stdio in the file's sandbox, each of
its allowlisted, pinned tools exposed as a tool of its own.

A file of this kind is not one tool: it is structured into
:class:`~engine.config.model.McpServerFile`, whose exposed tools (``expose``) carry an
:class:`~engine.config.model.UpstreamRef`; their calls go to the server's runtime
(:mod:`engine.upstream`: a pool, a shared server, or a server per call).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..config.checks import check_mcp_server
from ..config.model import McpServerFile, Source, Tool
from ..config.tool_kinds import ToolKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem

if TYPE_CHECKING:
    import sandbox

_UPSTREAM_TOOL: Mapping[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["permission_level"],
    "properties": {
        "permission_level": {"enum": [0, 1, 2, 3], "description": "As for any tool."},
        "as": {"$ref": "common.json#/$defs/name",
               "description": "The exposed name. Default: <file name>_<upstream name>."},
        "description": {"type": "string", "minLength": 1,
                        "description": "What agents are shown. Default: the pinned upstream description."},
        "pinned": {
            "type": "object", "additionalProperties": False, "required": ["digest", "description", "parameters"],
            "description": "Written by `sconnect mcp pin`: the reviewed definition; a server offering anything "
            "else is refused.",
            "properties": {
                "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
        },
    },
}
SCHEMA: Mapping[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["command", "tools"],
    "description": "An MCP server run over stdio in this file's sandbox; each allowlisted tool is exposed as its "
    "own tool. Exactly one of command, python and mcp_server; parameters and permission_level are then given "
    "per tool.",
    "properties": {
        "command": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                    "description": "argv of the server (no shell)."},
        "lifecycle": {"enum": ["single_use", "shared", "per_call"],
                      "description": "single_use: a fresh sandbox per call, started ahead of it; shared: one "
                      "long-lived sandboxed server (for stateful servers); per_call: a fresh sandbox started when "
                      "the call comes. Default: per_call."},
        "startup_timeout": {"$ref": "common.json#/$defs/duration",
                            "description": "Time for the server to start and list its tools. Default: 10s."},
        "pool_size": {"type": "integer", "minimum": 1, "maximum": 16,
                      "description": "single_use: sandboxes kept started ahead of calls. Default: 2."},
        "restart_backoff": {"$ref": "common.json#/$defs/duration",
                            "description": "The first pause before starting again a server that failed to start "
                            "or stopped soon after starting; doubles with each such failure in a row, up to 30s. "
                            "At least 10ms. Default: 500ms."},
        "tools": {
            "type": "object", "minProperties": 1,
            "description": "The upstream tools to expose, by their upstream name; every other tool of the server "
            "is hidden and cannot be called.",
            "additionalProperties": _UPSTREAM_TOOL,
        },
    },
}
_PER_TOOL = {"not": {}, "x-refusal": "is given per tool in an mcp_server file (see mcp_server.tools)"}
#: The tool's contract (parameters, level, secrets) comes from each upstream tool, not from the file.
FILE_RULES: Mapping[str, Any] = {
    "properties": {
        **{key: _PER_TOOL for key in ("parameters", "permission_level", "secret_arguments")},
        # Its content blocks pass through as the server returns them (schemas.py words the refusal).
        "output": {"not": {}},
    },
}


def _check(server_file: McpServerFile, doc: Document, root: Path) -> tuple[McpServerFile, list[ConfigProblem]]:
    return server_file, check_mcp_server(server_file, doc)


def _expose(server_file: McpServerFile, doc: Document) -> tuple[Tool, ...]:
    """The file's pinned tools, each located on its entry under ``mcp_server.tools``."""
    return tuple(
        attrs.evolve(
            tool, source=Source(doc.file, doc.locate(["mcp_server", "tools", tool.upstream.tool], key=True)[0])
        )
        for tool in server_file.tools()
        if tool.upstream is not None
    )


async def _launch(tool: Tool, arguments: Any, *, workspace: Path, work_root: Path) -> sandbox.Result:
    from ..upstream import call_tool  # the MCP client loads when such a tool runs

    return await call_tool(tool, arguments, workspace=workspace, work_root=work_root)


def _describe(tool: Tool) -> str:
    assert tool.upstream is not None
    return f"mcp {tool.upstream.tool} of {' '.join(tool.upstream.server.command)}"


KIND = register(ToolKind(
    name="mcp_server", schema=SCHEMA, hint="'mcp_server'", describe=_describe, check=_check, launch=_launch,
    file_rules=FILE_RULES, file_class=McpServerFile, expose=_expose,
))
