"""Helpers for the tool tests: run a tool function the way the sandbox runner does.

The runner starts ``/usr/bin/python3 -I -S`` (the system Python, no site-packages, no
environment) in the workspace, imports ``module:function``, calls it with the JSON
arguments from stdin and prints the JSON result; an exception is a non-zero exit with
the message on stderr. ``run_tool`` does the same, minus bubblewrap, so each module is
proven to import and work with the standard library alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
SANDBOX_PYTHON = "/usr/bin/python3"

_RUNNER = """\
import json, sys
sys.path.insert(0, {root!r})
from sconnect_tools.{module} import {function} as tool
try:
    result = tool(**json.load(sys.stdin))
except Exception as exc:
    print(f"{{type(exc).__name__}}: {{exc}}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(result))
"""


class ToolRun:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.result: Any = json.loads(proc.stdout) if proc.returncode == 0 else None


RunTool = Callable[..., ToolRun]


@pytest.fixture
def run_tool(tmp_path: pathlib.Path) -> RunTool:
    """Run ``sconnect_tools.<module>.<function>(**arguments)`` as the sandbox would."""
    if not os.access(SANDBOX_PYTHON, os.X_OK):
        pytest.skip(f"{SANDBOX_PYTHON} (the sandbox's Python) is not installed")

    def run(
        module: str,
        function: str,
        arguments: dict[str, Any],
        *,
        cwd: pathlib.Path | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 10,
    ) -> ToolRun:
        proc = subprocess.run(
            [
                SANDBOX_PYTHON,
                "-I",
                "-S",
                "-c",
                _RUNNER.format(root=ROOT, module=module, function=function),
            ],
            input=json.dumps(arguments),
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env=env or {},  # the sandbox clears the environment
            timeout=timeout_s,
        )
        return ToolRun(proc)

    return run
