"""Policy ``matches`` conditions on client arguments run in linear time (issue 11, item 2, for policies).

- test_a_catastrophic_pattern_cannot_hold_the_decision: a deny with
  ``matches: '^(a+)+$'`` (exponential under backtracking) decides a call whose
  argument is 5,000 ``a`` and a ``!`` — as ``sconnect policy can-i`` in a
  subprocess, so that a backtracking engine would show as a hang (the timeout
  is a guard, not a measurement) — and answers allowed, since the deny does not match.
- test_a_pattern_re2_cannot_run_is_a_located_config_error: a backreference is
  refused at load with its file:line, never at match time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from tests.security.test_policy_paths import write_config


def test_a_catastrophic_pattern_cannot_hold_the_decision(tmp_path: Path) -> None:
    root = write_config(tmp_path, "matches: '^(a+)+$'")
    arguments = json.dumps({"path": "a" * 5000 + "!"})
    result = subprocess.run(
        [sys.executable, "-m", "engine", "policy", "can-i", "--config", str(root), "--role", "user",
         "--tool", "read_file", "--args", arguments],
        capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "yes, without approval\n"), result.stderr


def test_a_pattern_re2_cannot_run_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, r"matches: '(a)\1'"))
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("policies/files.yaml", 14, "rules[1].conditions[0].matches")
    assert "not a valid regular expression" in problem.message
