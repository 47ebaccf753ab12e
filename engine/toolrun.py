"""Run a configured tool through the sandbox: the only bridge from config to ``sandbox.run``.

The engine never starts processes itself.  This module turns a :class:`Tool`
into a :class:`sandbox.Spec` (limits, workspace, environment from the tool's
allowlist, the Python package its function lives in) and calls the sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sandbox

from .config.model import Tool
from .config.modules import default_search, locate_on_sys_path


def package_dir(tool: Tool) -> str:
    """Host path of the top-level package (a directory, or a module file) holding ``tool``'s function.

    The loader found it, beside the tool's file or on ``sys.path``, without
    importing anything (:mod:`engine.config.modules`); a Tool built in code is
    looked for on ``sys.path`` the same way.  The path is bound read-only into
    the sandbox under its own name, so it is not resolved: a linked
    ``greet.py`` must still be importable as ``greet``.  LookupError when the
    module is nowhere.
    """
    if tool.python_package:
        return tool.python_package
    module = (tool.python or "").split(":")[0]
    located = locate_on_sys_path(module, default_search())
    if located is None:
        raise LookupError(f"no Python module named {module!r}")
    return os.path.abspath(located.top)


def build_spec(
    tool: Tool, *, workspace: Path, work_root: Path, environ: Mapping[str, str] | None = None
) -> sandbox.Spec:
    """The sandbox spec of one call of ``tool``."""
    needs = tool.sandbox
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in needs.env_allow if name in environ}
    env.update(needs.env)
    writable = list(needs.writable_paths)
    readable = list(needs.readable_paths)
    cwd = None
    if needs.workspace != "none":
        cwd = str(workspace)
        (writable if needs.workspace == "write" else readable).append(str(workspace))
    python_packages: tuple[str, ...] = ()
    if tool.python:
        python_packages = (package_dir(tool),)
    return sandbox.Spec(
        argv=tuple(tool.command),
        python=tool.python,
        python_packages=python_packages,
        timeout_s=float(needs.timeout),
        cpu_time_s=float(needs.cpu_time),
        memory_bytes=int(needs.memory),
        max_output_bytes=int(needs.max_output),
        network=needs.network,
        isolation=needs.isolation,
        readable_paths=tuple(readable),
        writable_paths=tuple(writable),
        cwd=cwd,
        env=tuple(sorted(env.items())),
        work_root=str(work_root),
    )


async def run_tool(
    tool: Tool, arguments: Any, *, workspace: Path, work_root: Path
) -> sandbox.Result:
    """Run one call; raises ``sandbox.SandboxError`` subclasses (e.g. IsolationUnavailable)."""
    spec = build_spec(tool, workspace=workspace, work_root=work_root)
    return await sandbox.run(spec, arguments)
