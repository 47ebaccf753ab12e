"""Chain tools in tools.d/: every mistake located, and ``policy explain`` showing each step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.config import load_config
from tests.config.test_loader import messages
from tests.conftest import SHIPPED_CONFIG

CHAIN = """\
name: echo_twice
description: Echoes, then echoes the echo (test).
permission_level: {level}
parameters:
  type: object
  properties:
    text: {{type: string}}
  required: [text]
chain:
  - id: first
    tool: echo
    arguments: {{text: '{{args.text}}'}}
  - tool: {second}
    arguments: {{text: '{placeholder}'}}
"""


def chain(root: Path, *, level: int = 0, second: str = "echo", placeholder: str = "{steps.first.result.text}") -> None:
    text = CHAIN.format(level=level, second=second, placeholder=placeholder)
    (root / "tools.d" / "echo_twice.yaml").write_text(text)


def test_the_shipped_chain_loads() -> None:
    tool = load_config(SHIPPED_CONFIG).tools["count_file_words"]
    assert [step.tool for step in tool.chain] == ["read_file", "text_stats"]
    assert tool.runs == "chain read_file -> text_stats"


def test_a_valid_chain_loads(minimal_config: Path) -> None:
    chain(minimal_config)
    tool = load_config(minimal_config).tools["echo_twice"]
    assert tool.chain[0].id == "first" and dict(tool.chain[1].arguments) == {"text": "{steps.first.result.text}"}


@pytest.mark.parametrize(
    ("placeholder", "expected"),
    [
        ("{steps.5.result}", "placeholder {steps.5.result} names no earlier step (earlier: 0, first)"),
        ("{steps.1.result}", "placeholder {steps.1.result} names no earlier step (earlier: 0, first)"),
        ("{args.nope}", "placeholder {args.nope} names no argument of this tool (its parameters: text)"),
        ("{text}", "placeholder {text} names nothing: placeholders start with args. or steps."),
        ("{steps.first.output}", "placeholder {steps.first.output} must be {steps.N.result...} or {steps.N.status}"),
        ("{steps.first", "not a valid template: expected '}' before end of string"),
    ],
)
def test_unknown_placeholders_are_located(minimal_config: Path, placeholder: str, expected: str) -> None:
    chain(minimal_config, placeholder=placeholder)
    assert messages(minimal_config) == [f"tools.d/echo_twice.yaml:14:23: chain[1].arguments.text: {expected}"]


def test_the_chain_level_must_reach_its_highest_step(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "loud.yaml").write_text(
        (minimal_config / "tools.d" / "echo.yaml").read_text().replace("name: echo", "name: loud")
        .replace("permission_level: 0", "permission_level: 2")
    )
    chain(minimal_config, level=1, second="loud")
    assert messages(minimal_config) == [
        "tools.d/echo_twice.yaml:3:19: permission_level: 1 is below the level of step tool 'loud' (2): "
        "a chain's level must be at least its highest step's"
    ]


def test_an_unknown_step_tool_is_located_with_did_you_mean(minimal_config: Path) -> None:
    chain(minimal_config, second="ecko")
    assert messages(minimal_config) == [
        "tools.d/echo_twice.yaml:13:11: chain[1].tool: no tool named 'ecko' (did you mean 'echo'? known: echo, notes)"
    ]


def test_a_step_may_not_be_a_chain(minimal_config: Path) -> None:
    chain(minimal_config)
    (minimal_config / "tools.d" / "outer.yaml").write_text(
        "name: outer\ndescription: A chain of a chain (test).\npermission_level: 0\nparameters: {type: object}\n"
        "chain:\n  - tool: echo_twice\n    arguments: {text: hi}\n"
    )
    assert messages(minimal_config) == [
        "tools.d/outer.yaml:6:11: chain[0].tool: tool 'echo_twice' is a chain itself: a step must be a program"
    ]


def test_a_chain_with_a_command_or_a_sandbox_is_refused(minimal_config: Path) -> None:
    chain(minimal_config)
    path = minimal_config / "tools.d" / "echo_twice.yaml"
    path.write_text(path.read_text() + "sandbox: {timeout: 2s}\n")
    assert messages(minimal_config) == [
        "tools.d/echo_twice.yaml:1:1: declare exactly one of 'command' (an argv list), 'python' "
        "(module:function), 'chain' (a list of steps, with no sandbox of its own), 'mcp_server' and "
        "'builtin' (remember or forget, carried out by the engine)"
    ]


def test_duplicate_step_ids_are_refused(minimal_config: Path) -> None:
    chain(minimal_config)
    path = minimal_config / "tools.d" / "echo_twice.yaml"
    path.write_text(path.read_text().replace("  - tool: echo\n", "  - id: first\n    tool: echo\n"))
    assert messages(minimal_config) == [
        "tools.d/echo_twice.yaml:13:9: chain[1].id: step id 'first' is already used by an earlier step"
    ]


def test_policy_explain_shows_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["policy", "explain", "--role", "user", "--tool", "count_file_words", "--config", str(SHIPPED_CONFIG)])
    out = capsys.readouterr().out
    assert code == 0
    assert "decision: require_approval (approver: user)" in out
    steps = out.split("chain steps, each decided again when it runs")[1].splitlines()[1:]
    assert steps[0].startswith("  0 (read: read_file): require_approval (approver: user): allowed by rule")
    assert steps[1].startswith("  1 (text_stats): allow: allowed by rule")
    code = main(["policy", "explain", "--role", "user", "--tool", "count_file_words", "--config", str(SHIPPED_CONFIG),
                 "--args", '{"path": "notes.txt"}', "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [(s["tool"], s["decision"]["effect"]) for s in data["steps"]] == [
        ("read_file", "require_approval"), ("text_stats", "allow"),
    ]
    assert data["steps"][0]["arguments"] == {"path": "notes.txt"} and data["steps"][1]["arguments"] is None
