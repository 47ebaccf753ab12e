"""A checkout in a private (0700) home, run as root (issue 13 item 1).

Before: every tool failed ("... is not traversable by the sandbox user") while start-up
and `check` reported a healthy sandbox.

- test_check_runs_a_real_call_from_a_private_home: the config and the tool package are
  copied into a 0700 directory; `sconnect check` there runs the calculator for real in
  the sandbox (the package is copied where the sandbox user can read it) and says so;
- test_serve_refuses_an_unreachable_state_dir: `serve` with its state directory inside
  that 0700 directory exits 2 at once with the one-line fix (--state-dir ...);
- test_check_fails_when_the_trial_call_fails: a calculator that cannot run makes
  `check` exit 1 and say FAILED.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox
from tests.conftest import copy_shipped

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_home(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("only a root engine switches tools to another uid that a 0700 home stops")
    if sandbox.detect().namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable: {sandbox.detect().namespaces_problem()}")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    for name in ("agents.d", "tools.d", "resources.d", "policies", "sconnect_tools"):
        copy_shipped(name, home / name)
    return home


def _sconnect(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "PYTHONPATH": f"{home}{os.pathsep}{REPO}"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv], cwd=home, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def test_check_runs_a_real_call_from_a_private_home(private_home: Path) -> None:
    done = _sconnect(private_home, "check", "--config", str(private_home))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "trial call: calculator 6*7 = 42 ok" in done.stdout
    assert "seccomp filter in force: yes" in done.stdout


def test_serve_refuses_an_unreachable_state_dir(private_home: Path) -> None:
    done = _sconnect(private_home, "serve", "--dev", "--port", "0", "--config", str(private_home))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "cannot reach the state directory" in line
    assert "--state-dir /var/lib/sconnect" in line


def test_check_fails_when_the_trial_call_fails(private_home: Path) -> None:
    broken = "def evaluate(expression):\n    raise RuntimeError('broken on purpose')\n"
    (private_home / "sconnect_tools" / "calc.py").write_text(broken)
    done = _sconnect(private_home, "check", "--config", str(private_home))
    assert done.returncode == 1
    assert "trial call: FAILED: calculator error" in done.stdout
