"""Run a configured tool through the sandbox: the only bridge from config to ``sandbox.run``.

The engine never starts processes itself.  This module turns a :class:`Tool`
into a :class:`sandbox.Spec` (limits, workspace, environment from the tool's
allowlist, the Python package its function lives in) and calls the sandbox.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sandbox

from .config.model import Tool


@functools.cache
def package_dir(module: str) -> str:
    """Host directory of the top-level package holding ``module``, to bind read-only."""
    top = module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise LookupError(f"no Python package named {top!r}")
    if spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    assert spec.origin is not None
    return str(Path(spec.origin).resolve())


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
        python_packages = (package_dir(tool.python.split(":")[0]),)
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
    if tool.upstream is not None:
        # A tool of an mcp_server file: its server's runtime (pool, shared, per call).
        from .upstream import call_tool

        return await call_tool(tool, arguments, workspace=workspace, work_root=work_root)
    spec = build_spec(tool, workspace=workspace, work_root=work_root)
    return await sandbox.run(spec, arguments)
