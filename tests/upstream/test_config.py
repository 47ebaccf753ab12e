"""``mcp_server`` tool files in the configuration (no server is started here).

Each test writes a tool file into a copy of tests/data/minimal and loads it: pinned tools
become ordinary Tools (named ``<file>_<tool>`` or by ``as``, parameters from the pin);
tools the file does not list do not exist; an unpinned tool, a pin edited by hand, a
file declaring both ``command`` and ``mcp_server``, per-file ``parameters``, and a
``restart_backoff`` under 10ms or not a duration are refused with the file and line of the
offending key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.upstream._connection import Definition
from engine.upstream.pin import write_pins

ECHO = Definition("Echo the text back.", {"type": "object", "properties": {"text": {"type": "string"}}})
ADD = Definition("Add two integers.", {"type": "object", "properties": {"a": {"type": "integer"}}})

UNPINNED = """\
name: up
description: An MCP server.
mcp_server:
  command: [/bin/cat]
  lifecycle: shared
  tools:
    echo:
      permission_level: 0
    add: {permission_level: 2, as: adder, description: Adds.}
"""


def _write(config: Path, text: str, name: str = "up.yaml") -> Path:
    path = config / "tools.d" / name
    path.write_text(text)
    return path


def _errors(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return [str(problem) for problem in caught.value.problems]


def test_pinned_tools_become_ordinary_tools(minimal_config: Path) -> None:
    _write(minimal_config, write_pins(UNPINNED, {"echo": ECHO, "add": ADD}))
    config = load_config(minimal_config)
    echo, adder = config.tools["up_echo"], config.tools["adder"]
    assert echo.description == ECHO.description and dict(echo.parameters) == ECHO.parameters
    assert echo.permission_level == 0 and echo.upstream is not None and echo.upstream.tool == "echo"
    assert adder.description == "Adds." and adder.permission_level == 2
    assert adder.upstream is not None and adder.upstream.server.lifecycle == "shared"
    assert str(echo.source) == "tools.d/up.yaml:7"
    assert "up" not in config.tools and "up_add" not in config.tools


def test_pins_keep_the_rest_of_the_file(minimal_config: Path) -> None:
    commented = UNPINNED.replace("  tools:\n", "  tools:  # reviewed by ops\n")
    pinned = write_pins(commented, {"echo": ECHO, "add": ADD})
    assert "  tools:  # reviewed by ops\n" in pinned
    assert pinned.startswith(commented.split("    echo:")[0])
    assert write_pins(pinned, {"echo": ECHO, "add": ADD}) == pinned


def test_an_unpinned_tool_is_an_error(minimal_config: Path) -> None:
    _write(minimal_config, write_pins(UNPINNED, {"add": ADD}))
    assert _errors(minimal_config) == [
        "tools.d/up.yaml:7:5: mcp_server.tools.echo: not pinned: review the server's definition with "
        "`sconnect mcp pin tools.d/up.yaml`"
    ]


def test_a_pin_edited_by_hand_is_an_error(minimal_config: Path) -> None:
    pinned = write_pins(UNPINNED, {"echo": ECHO, "add": ADD})
    # Someone widens the reviewed schema without pinning again.
    edited = pinned.replace("            text:\n              type: string\n", "            text: {}\n", 1)
    assert edited != pinned
    path = _write(minimal_config, edited)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "digest:" in text)
    assert _errors(minimal_config) == [
        f"tools.d/up.yaml:{line}:17: mcp_server.tools.echo.pinned.digest: does not match the pinned description "
        "and parameters (edited by hand?): review and pin again with `sconnect mcp pin tools.d/up.yaml`"
    ]


def test_command_and_mcp_server_together_are_refused(minimal_config: Path) -> None:
    _write(minimal_config, "command: [/bin/cat]\n" + write_pins(UNPINNED, {"echo": ECHO, "add": ADD}))
    assert _errors(minimal_config) == [
        "tools.d/up.yaml:1:1: declare exactly one of 'command' (an argv list), 'python' (module:function), "
        "'chain' (a list of steps, with no sandbox of its own), 'mcp_server' and "
        "'builtin' (remember or forget, carried out by the engine)",
    ]


def test_parameters_belong_to_the_pin_not_the_file(minimal_config: Path) -> None:
    _write(minimal_config, "parameters: {type: object}\n" + write_pins(UNPINNED, {"echo": ECHO, "add": ADD}))
    assert _errors(minimal_config) == [
        "tools.d/up.yaml:1:1: parameters: 'parameters' is given per tool in an mcp_server file (see mcp_server.tools)"
    ]


def test_an_exposed_name_must_be_a_tool_name(minimal_config: Path) -> None:
    text = UNPINNED.replace("    echo:\n", "    Get-Env:\n")
    _write(minimal_config, write_pins(text, {"Get-Env": ECHO, "add": ADD}))
    assert _errors(minimal_config) == [
        "tools.d/up.yaml:7:5: mcp_server.tools.Get-Env: the exposed name 'up_Get-Env' is not a valid tool name: "
        "give one with 'as:'"
    ]


def test_an_unknown_lifecycle_is_refused(minimal_config: Path) -> None:
    _write(minimal_config, write_pins(UNPINNED.replace("shared", "forever"), {"echo": ECHO, "add": ADD}))
    assert _errors(minimal_config) == [
        "tools.d/up.yaml:5:14: mcp_server.lifecycle: 'forever' is not one of 'single_use', 'shared', 'per_call'"
    ]


def test_a_restart_backoff_too_short_or_not_a_duration_is_refused(minimal_config: Path) -> None:
    for value, message in (
        ("1ms", "tools.d/up.yaml:6:20: mcp_server.restart_backoff: 0.001s is too short: at least 10ms"),
        ("soon", "tools.d/up.yaml:6:20: mcp_server.restart_backoff: 'soon' is not a duration"),
    ):
        text = UNPINNED.replace("  lifecycle: shared\n", f"  lifecycle: shared\n  restart_backoff: {value}\n")
        _write(minimal_config, write_pins(text, {"echo": ECHO, "add": ADD}))
        assert [problem.split(" (e.g.")[0] for problem in _errors(minimal_config)] == [message]
    text = UNPINNED.replace("  lifecycle: shared\n", "  lifecycle: shared\n  restart_backoff: 50ms\n")
    _write(minimal_config, write_pins(text, {"echo": ECHO, "add": ADD}))
    assert load_config(minimal_config).tools["up_echo"].upstream.server.restart_backoff == 0.05  # type: ignore[union-attr]
