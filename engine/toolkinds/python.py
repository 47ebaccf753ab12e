"""The ``python`` tool kind: ``module:function`` called in the tool's sandbox with the arguments.

The module is located when the configuration loads (beside the tool's file, or on the
engine's ``sys.path``), without importing it; the package it lives in is bound read-only
into the sandbox (engine.toolrun).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..config.checks import check_tool_module
from ..config.model import Tool
from ..config.tool_kinds import ToolKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem
from .command import launch

SCHEMA: Mapping[str, Any] = {
    "type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
    "x-form": "'package.module:function'",
    "description": "module:function called with the arguments as keyword arguments. Exactly one of command and python.",
}


def _check(tool: Tool, doc: Document, root: Path) -> tuple[Tool, list[ConfigProblem]]:
    """The module is there and defines the function; the tool remembers where it was found."""
    located, problems = check_tool_module(tool, doc, root)
    if located is not None:
        tool = attrs.evolve(tool, python_package=located.top)
    return tool, problems


KIND = register(ToolKind(
    name="python", schema=SCHEMA, hint="'python' (module:function)",
    describe=lambda tool: f"python {tool.python}", check=_check, launch=launch, early_start=True,
))
