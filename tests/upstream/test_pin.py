"""``sconnect mcp pin FILE`` (engine/cli/mcp_pin.py), run against the real test server.

- pinning writes each allowed tool's definition and digest into the file, keeps its
  comments, and the file then loads; ``--check`` exits 0;
- after the server changes a tool's description, ``--check`` exits 1 naming the tool,
  the line and what changed; pinning again accepts the new definition;
- a tool the server does not offer: exit 1, nothing written;
- a file that is not an mcp_server file, or a server that cannot start: a usage error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engine.cli import mcp_pin
from engine.config import load_config
from engine.errors import UsageError
from tests.upstream.conftest import POLICY
from tests.upstream.env import UpstreamEnv

pytestmark = pytest.mark.slow

TOOLS = """\
    echo:  # the one we need
      permission_level: 1
    add: {permission_level: 0, as: adder}
"""


def _line(path: Path, start: str) -> int:
    return next(number for number, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(start))


def _pin(path: Path, *, check: bool = False) -> int:
    return mcp_pin.run(argparse.Namespace(file=str(path), check=check))


def _config(minimal_config: Path, upstream_env: UpstreamEnv, tag: str, **options: object) -> Path:
    (minimal_config / "policies" / "upstream.yaml").write_text(POLICY)
    path = minimal_config / "tools.d" / "up.yaml"
    path.write_text(upstream_env.tool_file(tag, tools=TOOLS, **options))  # type: ignore[arg-type]
    return path


def test_pin_then_check(
    minimal_config: Path, upstream_env: UpstreamEnv, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(minimal_config, upstream_env, tag)
    assert _pin(path, check=True) == 1
    assert _pin(path) == 0
    out = capsys.readouterr().out
    assert f"{path}:{_line(path, '    echo:')}:5: echo: not pinned yet" in out
    hidden = "bad_picture, counter, crash, fail, garbage, hang, instance, odd_block, picture, secret_env"
    assert f"not exposed (not in mcp_server.tools): {hidden}" in out
    assert "pinned 2 tools: add, echo" in out
    text = path.read_text()
    assert "    echo:  # the one we need\n      permission_level: 1\n      pinned:\n" in text
    config = load_config(minimal_config)
    assert config.tools["up_echo"].parameters["required"] == ["text"]
    assert config.tools["adder"].description == "Add two integers."
    assert _pin(path, check=True) == 0
    assert _pin(path) == 0 and "every pin is up to date" in capsys.readouterr().out


def test_a_changed_tool_is_named_and_can_be_pinned_again(
    minimal_config: Path, upstream_env: UpstreamEnv, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(minimal_config, upstream_env, tag)
    assert _pin(path) == 0
    upstream_env.descriptions(tag).write_text(json.dumps({"echo": "Echo, and mail it to someone."}))
    capsys.readouterr()
    assert _pin(path, check=True) == 1
    out = capsys.readouterr().out
    assert f"{path}:{_line(path, '    echo:')}:5: echo: changed since pinned (description): pinned sha256:" in out
    assert "add: matches its pin" in out
    assert _pin(path) == 0
    assert load_config(minimal_config).tools["up_echo"].description == "Echo, and mail it to someone."


def test_a_tool_the_server_does_not_offer(
    minimal_config: Path, upstream_env: UpstreamEnv, tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(minimal_config, upstream_env, tag)
    path.write_text(path.read_text().replace("    echo:", "    ehco:"))
    before = path.read_text()
    assert _pin(path) == 1
    assert "ehco: the server offers no tool 'ehco'" in capsys.readouterr().out
    assert path.read_text() == before


def test_not_an_mcp_file_and_a_server_that_does_not_start(
    minimal_config: Path, upstream_env: UpstreamEnv, tag: str
) -> None:
    with pytest.raises(UsageError, match="not an mcp_server tool file"):
        _pin(minimal_config / "tools.d" / "echo.yaml")
    path = _config(minimal_config, upstream_env, tag)
    path.write_text(path.read_text().replace(str(upstream_env.server), "/nonexistent/server.py"))
    with pytest.raises(UsageError, match="the MCP server .*exited with code"):
        _pin(path)
