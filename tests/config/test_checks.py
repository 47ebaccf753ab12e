"""Checks beyond the schema: one test per mistake, asserting the exact ``file:line:column`` message.

Covers every resource-host check, invalid regular expressions in agent rules and
policy conditions, and that a file's mistakes are all reported in one run (an
agent's reference errors are not hidden by its rule errors, issue 13.14).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from tests.conftest import DATA, REPO


def messages(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


# --- every error of a file at once -------------------------------------------------------

# The agent of issue 13.14: an unknown tool in `tools`, and a rule using a tool `tools` lacks.
MUDDLED = (DATA / "broken" / "agent_two_mistakes.yaml").read_text()

MUDDLED_ERRORS = [
    "agents.d/muddled.yaml:3:15: tools[1]: unknown tool 'teleport' (known: echo, notes)",
    "agents.d/muddled.yaml:8:13: model.rules[0].tool: tool 'notes' is not in this agent's tools or client_tools",
]


def test_an_agent_reports_its_unknown_tool_and_its_rule_mistake_together(minimal_config: Path) -> None:
    (minimal_config / "agents.d" / "muddled.yaml").write_text(MUDDLED)
    assert messages(minimal_config) == MUDDLED_ERRORS


def test_check_prints_both_mistakes_of_the_agent(minimal_config: Path) -> None:
    (minimal_config / "agents.d" / "muddled.yaml").write_text(MUDDLED)
    done = subprocess.run(
        [sys.executable, "-m", "engine", "check", "--config", str(minimal_config)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    for expected in MUDDLED_ERRORS:
        assert expected in done.stderr
    assert "2 configuration errors" in done.stderr


def test_a_bad_pattern_does_not_hide_the_rest_of_its_rule(minimal_config: Path) -> None:
    (minimal_config / "agents.d" / "muddled.yaml").write_text(
        MUDDLED.replace("'note (?P<text>.+)'", "'note (?P<text>.+'").replace("answer: Noted.", "answer: '{oops'")
    )
    assert messages(minimal_config) == [
        "agents.d/muddled.yaml:3:15: tools[1]: unknown tool 'teleport' (known: echo, notes)",
        "agents.d/muddled.yaml:7:14: model.rules[0].match: not a valid regular expression: "
        "missing ): note (?P<text>.+" + RE2,
        "agents.d/muddled.yaml:8:13: model.rules[0].tool: tool 'notes' is not in this agent's tools or client_tools",
        "agents.d/muddled.yaml:10:15: model.rules[0].answer: not a valid template: "
        "expected '}' before end of string",
    ]


def test_a_policy_with_a_bad_condition_still_has_its_references_checked(minimal_config: Path) -> None:
    (minimal_config / "policies" / "more.yaml").write_text(
        "name: more\n"
        "description: A bad pattern and an unknown tool in one file.\n"
        "rules:\n"
        "  - id: more-echo\n"
        "    effect: allow\n"
        "    subjects: {roles: [member]}\n"
        "    targets: {tools: [teleport]}\n"
        "    conditions:\n"
        "      - {argument: text, matches: '[a-'}\n"
    )
    assert messages(minimal_config) == [
        "policies/more.yaml:7:23: rules[0].targets.tools[0]: unknown tool 'teleport' (known: echo, notes)",
        "policies/more.yaml:9:35: rules[0].conditions[0].matches: not a valid regular expression: "
        "missing ]: [a-" + RE2,
    ]


def test_a_schema_error_does_not_hide_an_agents_unknown_tool(minimal_config: Path) -> None:
    (minimal_config / "agents.d" / "muddled.yaml").write_text(
        MUDDLED.replace("tools: [echo, teleport]", "tools: [echo, teleport, Bad Name]\nmax_step: 3")
    )
    assert messages(minimal_config) == [
        "agents.d/muddled.yaml:3:15: tools[1]: unknown tool 'teleport' (known: echo, notes)",
        "agents.d/muddled.yaml:3:25: tools[2]: 'Bad Name' does not match '^[a-z][a-z0-9_-]{0,63}$'",
        "agents.d/muddled.yaml:4:1: max_step: unknown key 'max_step' (did you mean 'max_steps'?)",
    ]


def test_a_schema_error_does_not_hide_a_policys_unknown_role(minimal_config: Path) -> None:
    (minimal_config / "policies" / "more.yaml").write_text(
        "name: more\n"
        "description: A wrong effect and an unknown role in one file.\n"
        "rules:\n"
        "  - id: more-echo\n"
        "    effect: permit\n"
        "    subjects: {roles: [wizard]}\n"
        "    targets: {tools: [echo]}\n"
    )
    assert messages(minimal_config) == [
        "policies/more.yaml:5:13: rules[0].effect: 'permit' is not one of 'allow', 'deny', 'require_approval'",
        "policies/more.yaml:6:24: rules[0].subjects.roles[0]: unknown role 'wizard' (known: member)",
    ]


# --- invalid regular expressions ----------------------------------------------------------

RE2 = " (patterns run on RE2, a linear-time engine: no backreferences or lookarounds)"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(unclosed", "missing ): (unclosed" + RE2),
        ("*x", "no argument for repetition operator: *" + RE2),
        ("(?=x)y", "invalid perl operator: (?=" + RE2),
    ],
)
def test_invalid_regex_in_an_agent_rule(minimal_config: Path, pattern: str, reason: str) -> None:
    helper = minimal_config / "agents.d" / "helper.yaml"
    helper.write_text(helper.read_text().replace("'echo (?P<text>.+)'", repr(pattern)))
    found = messages(minimal_config)
    assert f"agents.d/helper.yaml:9:14: model.rules[0].match: not a valid regular expression: {reason}" in found


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[a-", "missing ]: [a-" + RE2),
        ("a{2,1}", "invalid repetition size: {2,1}" + RE2),
    ],
)
def test_invalid_regex_in_a_policy_condition(minimal_config: Path, pattern: str, reason: str) -> None:
    base = minimal_config / "policies" / "base.yaml"
    base.write_text(base.read_text() + f"    conditions:\n      - argument: text\n        matches: {pattern!r}\n")
    assert messages(minimal_config) == [
        f"policies/base.yaml:12:18: rules[0].conditions[0].matches: not a valid regular expression: {reason}"
    ]


# --- every resource-host check ------------------------------------------------------------

USERS_SQL = "CREATE TABLE users (id INTEGER, name TEXT);\n"

DB = """\
scheme: db
name: people
description: People, by id.
database: people.sqlite
seed: resources.d/people.sql
queries:
  - path: profile/{id}
    sql: SELECT id, name FROM users WHERE id = :id
    params: {id: integer}
"""

API = """\
scheme: api
name: weather
description: Weather by city.
base_url: https://wttr.in
routes:
  - path: current/{city}
    target: /{city}?format=j1
    params: {city: string}
"""


@pytest.fixture
def with_hosts(minimal_config: Path) -> Path:
    (minimal_config / "resources.d" / "people.sql").write_text(USERS_SQL)
    (minimal_config / "resources.d" / "people.yaml").write_text(DB)
    (minimal_config / "resources.d" / "weather.yaml").write_text(API)
    load_config(minimal_config)  # valid as written: each test adds one mistake
    return minimal_config


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("docs.yaml", "root: docs", "root: docs\nglobs: ['/etc/**']",
         "resources.d/docs.yaml:5:9: globs[0]: '/etc/**' must be relative to root, without '..'"),
        ("docs.yaml", "root: docs", "root: docs\nglobs: ['a/**', '../**']",
         "resources.d/docs.yaml:5:17: globs[1]: '../**' must be relative to root, without '..'"),
        ("people.yaml", "database: people.sqlite", "database: ../people.sqlite",
         "resources.d/people.yaml:4:11: database: '../people.sqlite' must not climb out with '..'"),
        ("people.yaml", "seed: resources.d/people.sql", "seed: resources.d/nobody.sql",
         "resources.d/people.yaml:5:7: seed: seed file 'resources.d/nobody.sql' does not exist"),
        ("people.yaml", "seed: resources.d/people.sql", "seed: ../people.sql",
         "resources.d/people.yaml:5:7: seed: '../people.sql' must be relative to the configuration directory, "
         "without '..'"),
        ("people.yaml", "seed: resources.d/people.sql", "seed: /etc/passwd",
         "resources.d/people.yaml:5:7: seed: '/etc/passwd' must be relative to the configuration directory, "
         "without '..'"),
        ("people.yaml", "WHERE id = :id", "WHERE id = :id AND name = :name",
         "resources.d/people.yaml:7:5: queries[0]: 'name' is used but is not a {placeholder} of path 'profile/{id}'"),
        ("people.yaml", "params: {id: integer}", "params: {id: integer, team: string}",
         "resources.d/people.yaml:9:33: queries[0].params.team: 'team' is not a {placeholder} of path "
         "'profile/{id}'"),
        ("weather.yaml", "base_url: https://wttr.in", "base_url: https://wttr.in\nallowed_hosts: [example.com]",
         "resources.d/weather.yaml:5:16: allowed_hosts: the base URL's origin https://wttr.in:443 is not in "
         "allowed_hosts"),
        ("weather.yaml", "target: /{city}?format=j1", "target: /{city}?format={format}",
         "resources.d/weather.yaml:6:5: routes[0]: 'format' is used but is not a {placeholder} of path "
         "'current/{city}'"),
        ("weather.yaml", "params: {city: string}", "params: {city: string, lang: string}",
         "resources.d/weather.yaml:8:34: routes[0].params.lang: 'lang' is not a {placeholder} of path "
         "'current/{city}'"),
    ],
)
def test_each_resource_mistake_is_located(with_hosts: Path, file: str, old: str, new: str, expected: str) -> None:
    edit(with_hosts / "resources.d" / file, old, new)
    found = messages(with_hosts)
    if file == "docs.yaml":  # the minimal agent reads file://docs: it says why it cannot
        assert found[0] == (
            "agents.d/helper.yaml:4:13: resources[0]: resource host 'file://docs' did not load "
            "(see resources.d/docs.yaml)"
        )
        found = found[1:]
    assert found == [expected]


def test_a_seed_linked_out_of_the_configuration_is_refused(with_hosts: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.sql"
    outside.write_text(USERS_SQL)
    seed = with_hosts / "resources.d" / "people.sql"
    seed.unlink()
    seed.symlink_to(outside)
    assert messages(with_hosts) == [
        "resources.d/people.yaml:5:7: seed: seed file 'resources.d/people.sql' is a symbolic link leading outside "
        "the configuration directory: refused, not read"
    ]


def test_an_agent_naming_a_resource_host_that_did_not_load(with_hosts: Path) -> None:
    helper = with_hosts / "agents.d" / "helper.yaml"
    edit(helper, "resources: [file://docs]", "resources: [file://docs, db://people]")
    edit(with_hosts / "resources.d" / "people.yaml", "database: people.sqlite", "database: ../people.sqlite")
    assert messages(with_hosts) == [
        "agents.d/helper.yaml:4:26: resources[1]: resource host 'db://people' did not load "
        "(see resources.d/people.yaml)",
        "resources.d/people.yaml:4:11: database: '../people.sqlite' must not climb out with '..'",
    ]


def test_an_agent_naming_an_unknown_resource_host(minimal_config: Path) -> None:
    edit(minimal_config / "agents.d" / "helper.yaml", "resources: [file://docs]", "resources: [file://doc]")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:4:13: resources[0]: unknown resource host 'file://doc' (known: file://docs)"
    ]


def test_two_hosts_with_one_name(with_hosts: Path) -> None:
    shutil.copy(with_hosts / "resources.d" / "weather.yaml", with_hosts / "resources.d" / "weather2.yaml")
    assert messages(with_hosts) == [
        "resources.d/weather2.yaml:2:7: name: resource host 'api://weather' is already declared in "
        "resources.d/weather.yaml:2"
    ]
