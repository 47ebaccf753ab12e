"""Fixtures for MCP servers as tools: the test server (tests/data/upstream/server.py),
runnable by the sandbox user, and configurations with an ``mcp_server`` tool file pinned
against it (see tests/upstream/env.py for why the server and the SDK are copied)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from engine.config.converter import converter
from engine.config.model import McpServerFile
from engine.upstream._connection import Definition
from engine.upstream.pin import list_definitions, write_pins
from tests.conftest import DATA
from tests.engine.conftest import start_server as start_server  # a real server on port 0
from tests.engine.conftest import state_dir as state_dir
from tests.upstream.env import SYSTEM_PYTHON, UpstreamEnv, build_upstream_env

POLICY = """\
name: upstream
description: Members may call the test MCP server's tools.
rules:
  - id: members-upstream
    effect: allow
    subjects: {roles: [member]}
    targets: {tools: ["up_*", adder]}
"""


@pytest.fixture(scope="session")
def upstream_env() -> Iterator[UpstreamEnv]:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run the test MCP server as the sandbox user")
    base = Path(tempfile.mkdtemp(prefix="sconnect-upstream-", dir="/tmp"))
    try:
        yield build_upstream_env(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def upstream_definitions(upstream_env: UpstreamEnv) -> dict[str, Definition]:
    """What the test server lists, read once from a real (sandboxed) start."""
    import yaml

    data = yaml.safe_load(upstream_env.tool_file("definitions"))
    return trio.run(list_definitions, converter.structure(data, McpServerFile))


@pytest.fixture
def tag() -> str:
    """A unique name for this test's server files; it is in the server's argv, for /proc."""
    return f"t{uuid.uuid4().hex[:12]}"


MakeConfig = Callable[..., Path]


@pytest.fixture
def mcp_config(
    tmp_path: Path, upstream_env: UpstreamEnv, upstream_definitions: dict[str, Definition], tag: str
) -> MakeConfig:
    """make(**tool_file_options) -> a config dir (tests/data/minimal + the pinned tool file + a policy)."""

    def make(**options: object) -> Path:
        root = tmp_path / "config"
        if not root.exists():
            shutil.copytree(DATA / "minimal", root)
            (root / "policies" / "upstream.yaml").write_text(POLICY)
        text = upstream_env.tool_file(tag, **options)  # type: ignore[arg-type]
        import yaml

        allowed = yaml.safe_load(text)["mcp_server"]["tools"]
        pinned = write_pins(text, {name: upstream_definitions[name] for name in allowed})
        (root / "tools.d" / "up.yaml").write_text(pinned)
        return root

    return make
