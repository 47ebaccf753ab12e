"""``sconnect tools new``: the written tool works at once; bad or taken names are refused, nothing written.

Real processes throughout: ``tools new``, then ``check``, then ``tools run`` in the
real sandbox, in a configuration directory the sandbox user can reach (pytest's
own tmp root is 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import KIND_DIRS
from tests.conftest import REPO, copy_shipped


def sconnect(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A copy of the shipped configuration, and a state directory, both traversable by the sandbox user."""
    base = Path(tempfile.mkdtemp(prefix="sconnect-toolsnew-", dir="/tmp"))
    os.chmod(base, 0o755)
    for name in KIND_DIRS.values():
        copy_shipped(name, base / "config" / name)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def listing(config: Path) -> list[str]:
    return sorted(path.name for path in (config / "tools.d").iterdir())


def test_new_tool_checks_and_runs_in_the_sandbox(reachable: Path) -> None:
    config = reachable / "config"
    done = sconnect("tools", "new", "greet", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"wrote {config / 'tools.d' / 'greet.yaml'} and {config / 'tools.d' / 'greet.py'}" in done.stdout
    assert f"sconnect tools run greet --config {config} --args" in done.stdout

    checked = sconnect("check", "--config", str(config), "--json")
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert "greet" in summary["tools_by_level"]["0"]
    assert not any("greet" in warning for warning in summary["warnings"])

    ran = sconnect("tools", "run", "greet", "--config", str(config), "--state-dir", str(reachable / "state"),
                   "--args", '{"name": "Ada"}', "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "ok", result
    assert result["output"] == {"greeting": "Hello, Ada!"}


def test_new_tool_arguments_are_checked(reachable: Path) -> None:
    config = reachable / "config"
    assert sconnect("tools", "new", "greet", "--config", str(config)).returncode == 0
    ran = sconnect("tools", "run", "greet", "--config", str(config), "--state-dir", str(reachable / "state"),
                   "--args", '{"nom": "Ada"}')
    assert ran.returncode == 2
    assert "invalid arguments for greet" in ran.stderr


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("my-tool", "'my-tool' is not a tool name: a lower-case letter, then letters, digits or '_', 64 at most "
                    "(use '_' instead of '-': the name is also a Python module's)"),
        ("Greet", "'Greet' is not a tool name"),
        ("../evil", "'../evil' is not a tool name"),
        ("9lives", "'9lives' is not a tool name"),
        ("json", "'json' is a Python keyword or standard-library module name: choose another"),
        ("class", "'class' is a Python keyword or standard-library module name: choose another"),
    ],
)
def test_a_bad_name_is_refused(reachable: Path, name: str, reason: str) -> None:
    config = reachable / "config"
    before = listing(config)
    done = sconnect("tools", "new", name, "--config", str(config))
    assert done.returncode == 2
    assert reason in done.stderr
    assert listing(config) == before


def test_a_name_that_exists_is_refused(reachable: Path) -> None:
    config = reachable / "config"
    before = listing(config)
    done = sconnect("tools", "new", "calculator", "--config", str(config))
    assert done.returncode == 2
    assert f"{config / 'tools.d' / 'calculator.yaml'} already exists: choose another name" in done.stderr
    assert listing(config) == before


def test_a_name_declared_in_another_file_is_refused(reachable: Path) -> None:
    config = reachable / "config"
    shutil.move(config / "tools.d" / "calculator.yaml", config / "tools.d" / "maths.yaml")
    before = listing(config)
    done = sconnect("tools", "new", "calculator", "--config", str(config))
    assert done.returncode == 2
    assert f"a tool named 'calculator' is already declared in {config / 'tools.d' / 'maths.yaml'}" in done.stderr
    assert listing(config) == before


def test_a_module_of_that_name_already_beside_is_refused(reachable: Path) -> None:
    config = reachable / "config"
    (config / "tools.d" / "greet.py").write_text("def run(): return 1\n")
    done = sconnect("tools", "new", "greet", "--config", str(config))
    assert done.returncode == 2
    assert "greet.py already exists" in done.stderr
    assert not (config / "tools.d" / "greet.yaml").exists()


def test_outside_a_configuration_directory_it_asks_for_one(tmp_path: Path) -> None:
    done = sconnect("tools", "new", "greet", cwd=tmp_path)
    assert done.returncode == 2
    assert "the current directory is not a configuration directory: pass --config DIR" in done.stderr
