"""Commands import what they use: `--version` and `--help` stay fast (issue: 685 ms before)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("trio", "jsonschema", "sandbox", "yaml", "httpx", "engine.config", "engine.server")

PROBE = """
import sys
from engine.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = [name for name in {heavy!r} if name in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def _heavy_modules_after(argv: list[str]) -> list[str]:
    code = PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    line = next(line for line in done.stdout.splitlines() if line.startswith("HEAVY:"))
    return [name for name in line.removeprefix("HEAVY:").split(",") if name]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["check", "--help"]])
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    heavy = _heavy_modules_after(argv)
    if argv[0] == "check":
        # `check` needs the config loader, but neither the server nor the sandbox's runtime.
        heavy = [name for name in heavy if name not in ("jsonschema", "yaml", "engine.config", "trio", "sandbox")]
    assert heavy == []


def test_version_and_help_still_answer() -> None:
    done = subprocess.run([sys.executable, "-m", "engine", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("sconnect ")
    shown = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, timeout=60)
    for command in ("check", "tools", "serve", "token", "protocol", "chat", "audit", "policy"):
        assert command in shown.stdout


def test_unknown_command_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "engine", "chekc"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'chekc'" in done.stderr


def test_serve_refuses_a_bad_flag_before_loading_the_server() -> None:
    """A flag refused by argparse (a port out of range) costs no import of the server itself."""
    code = PROBE.format(argv=["serve", "--port", "70000"], heavy=("engine.server.app", "engine.server.hub", "sandbox"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "argument --port: '70000' is not a port number" in done.stderr
    assert "HEAVY:\n" in done.stdout, done.stdout
