"""The policy's side of grants: a rule's ``remember`` (loaded, refused with file:line when
wrong), the bound it gives each decision, and ``policy explain`` showing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.policy import decide, remember_bound, rule_fingerprint
from engine.policy._remember import find_rule
from tests.conftest import REPO
from tests.grants.conftest import grants_config


@pytest.fixture(scope="module")
def config_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grants_config(tmp_path_factory.mktemp("grants") / "config")


@pytest.mark.parametrize(("tool", "sub", "roles", "bound"), [
    ("note", "alice", ("user",), "up to 8h (the default for an approval by user)"),
    ("cmd", "alice", ("user",), "up to 1h (the default for an approval by admin)"),
    ("secretive", "alice", ("user",), "never (rule secretive-never-remembered (policies/grants.yaml:4) says "
                                      "remember: never)"),
    ("vault", "alice", ("user",), "never (level 3 is never remembered unless a rule sets remember)"),
    ("vault2", "alice", ("user",), "up to 2h (rule alice-vault2 (policies/grants.yaml:14))"),
    ("calculator", "alice", ("user",), "never (nothing is approved, so nothing is remembered)"),
])
def test_the_bound_each_decision_gets(config_root: Path, tool: str, sub: str, roles: tuple[str, ...],
                                      bound: str) -> None:
    config = load_config(config_root)
    decision = decide(config, sub, roles, "tool.call", tool, {})
    assert remember_bound(config, decision, config.tools[tool].permission_level).describe() == bound


def test_a_rule_fingerprint_changes_with_what_it_says_not_where(config_root: Path, tmp_path: Path) -> None:
    config = load_config(config_root)
    before = rule_fingerprint(find_rule(config, "alice-vault2"))  # type: ignore[arg-type]
    policy = config_root / "policies" / "grants.yaml"
    moved = tmp_path / "moved"
    grants_config(moved)
    (moved / "policies" / "grants.yaml").write_text("# a comment moves every line\n" + policy.read_text())
    assert rule_fingerprint(find_rule(load_config(moved), "alice-vault2")) == before  # type: ignore[arg-type]
    text = policy.read_text().replace("remember: {max: 2h}", "remember: {max: 3h}")
    (moved / "policies" / "grants.yaml").write_text(text)
    assert rule_fingerprint(find_rule(load_config(moved), "alice-vault2")) != before  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "message"), [
    ("sometimes", "policies/grants.yaml:19:15: rules[2].remember: 'sometimes' is not a remember bound: write "
                  "'never' or {max: DURATION}, e.g. {max: 8h}"),
    ("{max: 2 parsecs}", "policies/grants.yaml:19:15: rules[2].remember: '2 parsecs' is not a duration "
                         "(e.g. 500ms, 5s, 2m)"),
    ("{max: 0s}", "policies/grants.yaml:19:15: rules[2].remember: remember.max must be longer than 0s"),
    ("{max: 2h, min: 1h}", "policies/grants.yaml:19:15: rules[2].remember: {'max': '2h', 'min': '1h'} is not a "
                           "remember bound: write 'never' or {max: DURATION}, e.g. {max: 8h}"),
])
def test_a_wrong_remember_is_refused_with_its_line(tmp_path: Path, value: str, message: str) -> None:
    root = grants_config(tmp_path / "config")
    policy = root / "policies" / "grants.yaml"
    policy.write_text(policy.read_text().replace("remember: {max: 2h}", f"remember: {value}"))
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    assert [str(p) for p in caught.value.problems] == [message]


def test_remember_on_a_deny_is_refused(tmp_path: Path) -> None:
    root = grants_config(tmp_path / "config")
    policy = root / "policies" / "grants.yaml"
    policy.write_text(policy.read_text() + "  - id: no-cmd\n    effect: deny\n    subjects: {roles: [user]}\n"
                      "    targets: {tools: [cmd]}\n    remember: never\n")
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    assert [str(p) for p in caught.value.problems] == [
        "policies/grants.yaml:24:5: rules[3].remember: 'remember' does nothing on a deny rule (nothing is approved)"]


def test_policy_explain_shows_the_bound(config_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "policy", "explain", "--config", str(config_root), "--role", "user",
         "--sub", "alice", "--tool", "vault2"], capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "remember: up to 2h (rule alice-vault2 (policies/grants.yaml:14))\n" in done.stdout
