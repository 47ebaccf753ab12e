"""The test MCP server made runnable by the sandbox user (shared by the tests and bench/).

Tools run as uid 65534 when the engine runs as root, and the interpreter the suite runs
on may live under a 0700 home: `build_upstream_env` copies the server, the `mcp` SDK and
its dependencies (hard links where possible) into a directory every uid can read; the
server then runs on the system interpreter with that directory on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import attrs

DATA = Path(__file__).parent.parent / "data"
_IMPORTS = "import anyio, mcp_types, mcp.server.lowlevel, mcp.server.stdio"
_FIND_PACKAGES = f"""
import json, os, sys, sysconfig
{_IMPORTS}
purelib = sysconfig.get_paths()["purelib"]
tops = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if path.startswith(purelib + os.sep):
        tops.add(os.path.relpath(path, purelib).split(os.sep)[0])
print(json.dumps({{"purelib": purelib, "tops": sorted(tops)}}))
"""
SYSTEM_PYTHON = "/usr/bin/python3"


DEFAULT_TOOLS = """\
    echo:
      permission_level: 0
    add:
      permission_level: 0
      as: adder
    counter: {permission_level: 0}
    instance: {permission_level: 0}
    fail: {permission_level: 0}
    crash: {permission_level: 0}
    garbage: {permission_level: 0}
    hang: {permission_level: 0}
"""
TOOL_FILE = """\
name: {name}
description: The test MCP server (tests/data/upstream/server.py).
mcp_server:
  # the server, on the system interpreter (readable by the sandbox user)
  command: [{python}, -S, {server}, --start-file, {starts}, --calls-file, {calls},
            --descriptions, {descriptions}, --delay-file, {delay}]
  lifecycle: {lifecycle}
  startup_timeout: {startup_timeout}
  pool_size: {pool_size}
  restart_backoff: {restart_backoff}
  tools:
{tools}sandbox:
  timeout: {timeout}
  cpu_time: 60s
  memory: 1GiB
  readable_paths: [{base}]
  writable_paths: [{writable}]
  env:
    PYTHONPATH: {site}
"""


@attrs.frozen
class UpstreamEnv:
    base: Path  # readable by every uid
    site: Path  # the SDK and its dependencies
    server: Path  # the test server script
    python: str

    @property
    def writable(self) -> Path:
        return self.base / "rw"

    def starts(self, tag: str) -> Path:
        """One line per start of the server whose tool file was made with `tag`."""
        return self.writable / f"{tag}.starts"

    def calls(self, tag: str) -> Path:
        """One line per call the server of `tag` received (the tool's upstream name)."""
        return self.writable / f"{tag}.calls"

    def descriptions(self, tag: str) -> Path:
        """JSON {tool: description} the server of `tag` offers instead of its own, when present."""
        return self.writable / f"{tag}.descriptions.json"

    def delay(self, tag: str) -> Path:
        """Seconds the server of `tag` waits before serving, when present."""
        return self.writable / f"{tag}.delay"

    def tool_file(
        self, tag: str, *, name: str = "up", lifecycle: str = "per_call", tools: str = DEFAULT_TOOLS,
        startup_timeout: str = "20s", timeout: str = "10s", pool_size: int = 2, restart_backoff: str = "500ms",
    ) -> str:
        """The YAML of an mcp_server tool file running the test server (not pinned yet).

        `tag` names this server's files and appears in its argv (find it in /proc with it).
        """
        return TOOL_FILE.format(
            name=name, python=self.python, server=self.server, starts=self.starts(tag), calls=self.calls(tag),
            descriptions=self.descriptions(tag), delay=self.delay(tag),
            lifecycle=lifecycle, tools=tools, startup_timeout=startup_timeout, timeout=timeout,
            site=self.site, base=self.base, writable=self.writable, pool_size=pool_size,
            restart_backoff=restart_backoff,
        )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)



def build_upstream_env(base: Path) -> UpstreamEnv:
    """Fill `base` (a fresh directory) with the server and the packages it imports."""
    found = json.loads(
        subprocess.run([sys.executable, "-c", _FIND_PACKAGES], capture_output=True, text=True, check=True).stdout
    )
    os.chmod(base, 0o755)
    site = base / "site"
    site.mkdir()
    purelib = Path(found["purelib"])
    for top in found["tops"]:
        if top.startswith("__editable__"):
            continue
        source = purelib / top
        if source.is_dir():
            shutil.copytree(source, site / top, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns("tests"))
        else:
            _link_or_copy(str(source), str(site / top))
    for info in purelib.glob("*.dist-info"):
        shutil.copytree(info, site / info.name, copy_function=_link_or_copy)
    for directory, _, _ in os.walk(site):
        os.chmod(directory, 0o755)
    server = base / "server.py"
    shutil.copy(DATA / "upstream" / "server.py", server)
    os.chmod(server, 0o644)
    # Compiled once here: the sandbox user cannot write __pycache__, and compiling the SDK
    # at every start would cost seconds.
    subprocess.run([SYSTEM_PYTHON, "-m", "compileall", "-q", str(site)], check=False, capture_output=True)
    writable = base / "rw"
    writable.mkdir()
    os.chmod(writable, 0o777)
    return UpstreamEnv(base, site, server, SYSTEM_PYTHON)
