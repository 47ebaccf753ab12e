"""Deny rules over paths: other spellings, undecidable arguments, and lint (issue 11, item 16).

A config with a ``read_file`` tool (a ``path`` argument) that users may call,
and a deny on ``secret/``:

- test_prefix_deny_holds_for_every_spelling: the deny written with ``prefix``
  (the rule of the report) denies ``secret/x``, ``./secret/x``,
  ``x/../secret/x`` and ``secret//x``, by real policy decisions.
- test_path_prefix_deny_normalises: the same with ``path_prefix``, which also
  keeps ``secretive/x`` allowed (whole segments) and refuses a climb out.
- test_a_deny_that_cannot_be_decided_denies: argument missing, or not a string; the
  reason says the deny failed closed.
- test_a_path_prefix_grant_never_holds_for_a_climb: an allow with path_prefix
  does not grant ``docs/../secret/x``.
- test_can_i_denies_both_spellings: ``sconnect policy can-i`` as a subprocess
  exits 1 for both bypass spellings, 0 for an ordinary path.
- test_lint_names_the_fragile_rule: ``sconnect policy lint`` names the prefix
  rule as fragile with its ``file:line``, and not the path_prefix one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Config, load_config
from engine.errors import ConfigError
from engine.policy import decide

USER = frozenset({"user"})
BYPASSES = ("./secret/x", "x/../secret/x", "secret//x", "./././secret/x")

TOOL = """\
name: read_file
description: Read a file of the workspace.
permission_level: 0
command: [/bin/cat]
parameters:
  type: object
  properties:
    path: {type: string}
    count: {type: integer}
  additionalProperties: false
"""

POLICY = """\
name: files
description: Users read files, never under secret/.
roles:
  user: {description: Everyone.}
rules:
  - id: users-read
    effect: allow
    subjects: {roles: [user]}
    targets: {tools: [read_file]}
  - id: no-secrets
    effect: deny
    subjects: {roles: [user]}
    targets: {tools: [read_file]}
    conditions: [{argument: path, CONDITION}]
"""


def write_config(root: Path, condition: str) -> Path:
    (root / "tools.d").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "tools.d" / "read_file.yaml").write_text(TOOL)
    (root / "policies" / "files.yaml").write_text(POLICY.replace("CONDITION", condition))
    return root


def effect(config: Config, arguments: dict[str, object]) -> str:
    return decide(config, "alice", USER, "tool.call", "read_file", arguments).effect


def test_prefix_deny_holds_for_every_spelling(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "prefix: secret/"))
    assert effect(config, {"path": "docs/a.txt"}) == "allow"
    assert effect(config, {"path": "secret/x"}) == "deny"
    for spelling in BYPASSES:
        decision = decide(config, "alice", USER, "tool.call", "read_file", {"path": spelling})
        assert decision.effect == "deny", spelling
        assert decision.deciding_rule is not None and decision.deciding_rule.id == "no-secrets"


def test_path_prefix_deny_normalises(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "path_prefix: secret"))
    for spelling in ("secret", "secret/x", *BYPASSES, "docs/../secret/deep/x"):
        assert effect(config, {"path": spelling}) == "deny", spelling
    for fine in ("secretive/x", "docs/secret/x", "docs/./a.txt"):
        assert effect(config, {"path": fine}) == "allow", fine
    # Cannot be placed relative to "secret": a climb above the start, an absolute path, a backslash.
    for unplaceable in ("../outside/secret", "/secret/x", "secret\\x"):
        assert effect(config, {"path": unplaceable}) == "deny", unplaceable


@pytest.mark.parametrize("condition", ["prefix: secret/", "path_prefix: secret", "matches: 'secret/.*'"])
def test_a_deny_that_cannot_be_decided_denies(tmp_path: Path, condition: str) -> None:
    config = load_config(write_config(tmp_path, condition))
    missing = decide(config, "alice", USER, "tool.call", "read_file", {})
    assert missing.effect == "deny"
    assert "argument 'path' is missing, so the deny applies (a deny that cannot be decided fails closed)" in (
        missing.reason)
    assert effect(config, {"path": 7}) == "deny"  # not a string
    assert effect(config, {"path": ["secret", "x"]}) == "deny"
    assert effect(config, {"path": "docs/a.txt"}) == "allow"


def test_a_path_prefix_grant_never_holds_for_a_climb(tmp_path: Path) -> None:
    root = write_config(tmp_path, "path_prefix: secret")
    (root / "policies" / "files.yaml").write_text(
        "name: files\ndescription: Users read docs only.\nroles:\n  user: {}\nrules:\n"
        "  - id: users-read-docs\n    effect: allow\n    subjects: {roles: [user]}\n"
        "    targets: {tools: [read_file]}\n    conditions: [{argument: path, path_prefix: docs/}]\n"
    )
    config = load_config(root)
    assert effect(config, {"path": "./docs/a.txt"}) == "allow"
    for outside in ("docs/../secret/x", "../docs/a", "/docs/a", "docs\\..\\secret"):
        assert effect(config, {"path": outside}) == "deny", outside


def test_a_path_prefix_that_climbs_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, "path_prefix: docs/../secret"))
    [problem] = caught.value.problems
    where = (problem.file, problem.line, problem.field)
    assert where == ("policies/files.yaml", 14, "rules[1].conditions[0].path_prefix")


def sconnect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "policy", *args], capture_output=True, text=True, timeout=60)


def test_can_i_denies_both_spellings(tmp_path: Path) -> None:
    root = write_config(tmp_path, "prefix: secret/")
    for spelling, code in (("./secret/x", 1), ("x/../secret/x", 1), ("docs/a.txt", 0)):
        result = sconnect("can-i", "--config", str(root), "--role", "user", "--tool", "read_file",
                          "--args", f'{{"path": "{spelling}"}}')
        assert result.returncode == code, (spelling, result.stdout, result.stderr)
        if code == 1:
            assert "denied by rule no-secrets (policies/files.yaml:10)" in result.stdout


def test_lint_names_the_fragile_rule(tmp_path: Path) -> None:
    fragile = sconnect("lint", "--config", str(write_config(tmp_path / "a", "prefix: secret/")))
    assert ("policies/files.yaml:10: warning: rule no-secrets: condition on 'path': prefix compares the raw string"
            in fragile.stdout), fragile.stdout
    assert "[fragile-condition]" in fragile.stdout
    sound = sconnect("lint", "--config", str(write_config(tmp_path / "b", "path_prefix: secret")))
    assert "fragile-condition" not in sound.stdout, sound.stdout
