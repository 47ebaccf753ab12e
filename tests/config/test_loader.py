"""The configuration loader: every shipped file loads; every mistake is located exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.config import load_config, resolve_config_dir
from engine.config.model import RulesModel
from engine.errors import ConfigError
from tests.conftest import DATA, REPO, SHIPPED_CONFIG

BROKEN = DATA / "broken"


def messages(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


def drop(root: Path, fixture: str, directory: str) -> None:
    shutil.copy(BROKEN / fixture, root / directory / fixture)


def test_shipped_configuration_loads() -> None:
    config = load_config(SHIPPED_CONFIG)
    assert {"assistant", "bookkeeper"} <= set(config.agents)
    levels = {tool.permission_level for tool in config.tools.values()}
    assert levels == {0, 1, 2, 3}
    assert {"file://local", "db://users", "api://weather"} <= set(config.resources)
    assert {"user", "admin"} <= config.roles
    assert isinstance(config.agents["assistant"].model, RulesModel)
    # The level-3 example is refused by the default policy: the loader says so.
    assert any("send_payment" in warning for warning in config.warnings)


def test_minimal_configuration_loads_with_sources(minimal_config: Path) -> None:
    config = load_config(minimal_config)
    echo = config.tools["echo"]
    assert str(echo.source) == "tools.d/echo.yaml:1"
    assert echo.sandbox.timeout == 2.0
    assert echo.sandbox.memory == 64 * 2**20
    assert echo.sandbox.network is False
    rule = config.policies[0].rules[0]
    assert str(rule.source) == "policies/base.yaml:6"


@pytest.mark.parametrize(
    ("fixture", "directory", "expected"),
    [
        ("bad_level.yaml", "tools.d", "tools.d/bad_level.yaml:3:19: permission_level: 7 is not one of 0, 1, 2, 3"),
        (
            "unknown_key.yaml",
            "tools.d",
            "tools.d/unknown_key.yaml:8:3: sandbox.timout: unknown key 'timout' (did you mean 'timeout'?)",
        ),
        (
            "duplicate_key.yaml", "tools.d",
            "tools.d/duplicate_key.yaml:8:3: duplicate key 'memory' (first set on line 7)",
        ),
        (
            "bad_parameters.yaml",
            "tools.d",
            "tools.d/bad_parameters.yaml:9:13: parameters.properties.cmd.type: 'strin' is not a valid "
            "JSON Schema type (expected one of array, boolean, integer, null, number, object, string)",
        ),
        (
            "both_runners.yaml",
            "tools.d",
            "tools.d/both_runners.yaml:1:1: declare exactly one of 'command' (an argv list), 'python' "
            "(module:function), 'chain' (a list of steps, with no sandbox of its own), 'mcp_server' and "
            "'builtin' (remember or forget, carried out by the engine)",
        ),
        (
            "duplicate_name.yaml",
            "tools.d",
            "tools.d/echo.yaml:1:7: name: tool 'echo' is already declared in tools.d/duplicate_name.yaml:1",
        ),
        (
            "agent_unknown_tool.yaml",
            "agents.d",
            "agents.d/agent_unknown_tool.yaml:3:15: tools[1]: unknown tool 'teleport' (known: echo, notes)",
        ),
        (
            "agent_unknown_provider.yaml",
            "agents.d",
            "agents.d/agent_unknown_provider.yaml:4:13: model.provider: 'skynet' is not one of 'rules', 'openai'",
        ),
    ],
)
def test_each_mistake_is_located(minimal_config: Path, fixture: str, directory: str, expected: str) -> None:
    drop(minimal_config, fixture, directory)
    assert messages(minimal_config) == [expected]


def test_yaml_syntax_error_is_located(minimal_config: Path) -> None:
    drop(minimal_config, "yaml_syntax.yaml", "tools.d")
    [message] = messages(minimal_config)
    # libyaml and the pure-Python parser word the rest differently.
    assert message.startswith("tools.d/yaml_syntax.yaml:5:11: YAML syntax error: while parsing a flow sequence")
    assert "expected ',' or ']'" in message


def test_bad_duration_and_size_are_both_reported(minimal_config: Path) -> None:
    drop(minimal_config, "bad_units.yaml", "tools.d")
    assert messages(minimal_config) == [
        "tools.d/bad_units.yaml:7:12: sandbox.timeout: '30 parsecs' is not a duration (e.g. 500ms, 5s, 2m)",
        "tools.d/bad_units.yaml:8:11: sandbox.memory: 'lots' is not a size (e.g. 64KiB, 256MiB, 1GiB)",
    ]


def test_rule_problems_inside_an_agent(minimal_config: Path) -> None:
    drop(minimal_config, "agent_bad_rules.yaml", "agents.d")
    assert messages(minimal_config) == [
        "agents.d/agent_bad_rules.yaml:8:13: model.rules[0].tool: "
        "tool 'notes' is not in this agent's tools or client_tools",
        "agents.d/agent_bad_rules.yaml:9:25: model.rules[0].arguments.path: "
        "placeholder {file} is not a named group of match",
    ]


def test_unknown_role_and_tool_in_a_policy(minimal_config: Path) -> None:
    drop(minimal_config, "policy_unknown_role.yaml", "policies")
    assert messages(minimal_config) == [
        "policies/policy_unknown_role.yaml:6:24: rules[0].subjects.roles[0]: unknown role 'wizard' (known: member)",
        "policies/policy_unknown_role.yaml:7:29: rules[0].targets.tools[1]: unknown tool 'teleport' "
        "(known: echo, notes)",
    ]


def test_every_broken_file_is_reported_in_one_load(minimal_config: Path) -> None:
    for fixture in ("yaml_syntax.yaml", "bad_units.yaml", "unknown_key.yaml", "bad_parameters.yaml"):
        drop(minimal_config, fixture, "tools.d")
    drop(minimal_config, "agent_unknown_tool.yaml", "agents.d")
    drop(minimal_config, "policy_unknown_role.yaml", "policies")
    found = messages(minimal_config)
    files = {line.split(":")[0] for line in found}
    assert files == {
        "tools.d/yaml_syntax.yaml",
        "tools.d/bad_units.yaml",
        "tools.d/unknown_key.yaml",
        "tools.d/bad_parameters.yaml",
        "agents.d/agent_unknown_tool.yaml",
        "policies/policy_unknown_role.yaml",
    }
    assert found == sorted(found, key=lambda line: (line.split(":")[0], int(line.split(":")[1])))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "tools.d/x.yaml: file is empty: expected one YAML mapping"),
        ("- a\n- b\n", "tools.d/x.yaml:1:1: expected a mapping of keys to values, found list"),
        (
            "name: a\n---\nname: b\n",
            "tools.d/x.yaml:2:1: YAML syntax error: more than one YAML document: a file holds exactly one",
        ),
    ],
)
def test_file_shapes_refused(minimal_config: Path, text: str, expected: str) -> None:
    (minimal_config / "tools.d" / "x.yaml").write_text(text)
    assert messages(minimal_config) == [expected]


def test_semantic_tool_checks(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "x.yaml").write_text(
        "name: x\n"
        "description: Checks beyond the schema.\n"
        "permission_level: 0\n"
        "python: no_such_package.mod:run\n"
        "secret_arguments: [token]\n"
        "parameters:\n"
        "  type: array\n"
    )
    assert messages(minimal_config) == [
        "tools.d/x.yaml:4:9: python: no Python module named 'no_such_package.mod': put no_such_package.py "
        "(or a package no_such_package/) beside this file, or install it",
        "tools.d/x.yaml:5:20: secret_arguments[0]: 'token' is not one of the tool's parameters",
        "tools.d/x.yaml:7:3: parameters: the arguments must be an object: set 'type: object'",
    ]


def test_wrong_types_are_not_coerced(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "x.yaml").write_text(
        "name: x\n"
        "description: Strings where booleans belong.\n"
        "permission_level: '1'\n"
        "command: [/bin/true]\n"
        "parameters: {type: object}\n"
        "sandbox: {network: 'false'}\n"
    )
    assert messages(minimal_config) == [
        "tools.d/x.yaml:3:19: permission_level: '1' is not one of 0, 1, 2, 3",
        "tools.d/x.yaml:6:20: sandbox.network: 'false' is not of type 'boolean', 'array'",
    ]


def test_ignored_files(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / ".hidden.yaml").write_text("not: [valid")
    (minimal_config / "tools.d" / "README.md").write_text("# not config")
    (minimal_config / "tools.d" / "backup.yaml~").write_text("not: [valid")
    tests = minimal_config / "policies" / "tests"
    tests.mkdir()
    (tests / "cases.yaml").write_text("cases: []\n")
    assert set(load_config(minimal_config).tools) == {"echo", "notes"}


def test_yml_extension_loads(minimal_config: Path) -> None:
    shutil.move(minimal_config / "tools.d" / "echo.yaml", minimal_config / "tools.d" / "echo.yml")
    assert "echo" in load_config(minimal_config).tools


def test_not_a_config_directory(tmp_path: Path) -> None:
    assert messages(tmp_path) == [
        f"{tmp_path}: not a configuration directory: expected agents.d/, tools.d/, resources.d/, policies/, models.d/"
    ]
    assert messages(tmp_path / "nope") == [f"{tmp_path / 'nope'}: configuration directory does not exist"]


def test_config_dir_resolution(tmp_path: Path, minimal_config: Path) -> None:
    assert resolve_config_dir(str(minimal_config)) == minimal_config
    assert resolve_config_dir(None, cwd=minimal_config) == minimal_config
    # Anywhere else, the shipped example is used.
    assert resolve_config_dir(None, cwd=tmp_path) == REPO


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ("python: sconnect_tools.calx:evaluate", "tools.d/x.yaml:4:9: python: no Python module named "
         f"'sconnect_tools.calx': {REPO / 'sconnect_tools'} has no 'calx'"),
        ("python: sconnect_tools.calc:evaluat",
         "tools.d/x.yaml:4:9: python: module 'sconnect_tools.calc' has no function 'evaluat'"),
        ("command: [/bin/unamex]",
         "tools.d/x.yaml:4:11: command[0]: '/bin/unamex' does not exist or is not executable"),
        ("command: [no-such-program]",
         "tools.d/x.yaml:4:11: command[0]: 'no-such-program' is not found on the tool's PATH "
         "(/usr/local/bin:/usr/bin:/bin)"),
    ],
)
def test_tools_that_cannot_run_are_refused(minimal_config: Path, runs: str, expected: str) -> None:
    (minimal_config / "tools.d" / "x.yaml").write_text(
        f"name: x\ndescription: Cannot run.\npermission_level: 0\n{runs}\nparameters: {{type: object}}\n"
    )
    assert messages(minimal_config) == [expected]


def test_a_tool_that_did_not_load_is_not_called_unknown(minimal_config: Path) -> None:
    echo = minimal_config / "tools.d" / "echo.yaml"
    echo.write_text(echo.read_text().replace("timeout: 2s", "timeout: 5 parsecs"))
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:3:9: tools[0]: tool 'echo' did not load (see tools.d/echo.yaml)",
        "policies/base.yaml:9:23: rules[0].targets.tools[0]: tool 'echo' did not load (see tools.d/echo.yaml)",
        "tools.d/echo.yaml:12:12: sandbox.timeout: '5 parsecs' is not a duration (e.g. 500ms, 5s, 2m)",
    ]


def test_a_bare_number_where_a_unit_belongs(minimal_config: Path) -> None:
    echo = minimal_config / "tools.d" / "echo.yaml"
    echo.write_text(echo.read_text().replace("timeout: 2s", "timeout: 5"))
    assert "tools.d/echo.yaml:12:12: sandbox.timeout: 5 needs its unit, e.g. 5s" in messages(minimal_config)
