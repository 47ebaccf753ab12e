"""The ``sconnect`` commands as a user runs them: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.conftest import DATA, REPO, SHIPPED_CONFIG

SECRET = "cli-test-secret-0123456789abcdef0123456789"


def sconnect(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd or SHIPPED_CONFIG,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="sconnect-cli-", dir="/tmp"))
    os.chmod(base, 0o711)
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


def test_check_summarises_the_shipped_config() -> None:
    done = sconnect("check")
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout
    assert "3 system restricted    send_payment" in done.stdout
    assert "sandbox:" in done.stdout


def test_check_from_anywhere_uses_the_example(tmp_path: Path) -> None:
    done = sconnect("check", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] is True and Path(summary["config"]) == REPO
    assert set(summary["agents"]) >= {"assistant", "bookkeeper"}
    assert summary["sandbox"]["backend"] in ("namespaces", "process")


def test_check_reports_every_error_and_exits_1(tmp_path: Path) -> None:
    root = tmp_path / "config"
    shutil.copytree(DATA / "minimal", root)
    for name in ("bad_units.yaml", "unknown_key.yaml"):
        shutil.copy(DATA / "broken" / name, root / "tools.d" / name)
    done = sconnect("check", "--config", str(root))
    assert done.returncode == 1
    assert "tools.d/bad_units.yaml:7:12: sandbox.timeout: '30 parsecs' is not a duration" in done.stderr
    assert "tools.d/unknown_key.yaml:8:3: sandbox.timout: unknown key 'timout'" in done.stderr
    as_json = json.loads(sconnect("check", "--config", str(root), "--json").stdout)
    assert as_json["ok"] is False
    assert {(e["file"], e["line"]) for e in as_json["errors"]} == {
        ("tools.d/bad_units.yaml", 7), ("tools.d/bad_units.yaml", 8), ("tools.d/unknown_key.yaml", 8)
    }


def test_tools_list() -> None:
    done = sconnect("tools", "list")
    assert done.returncode == 0
    assert "calculator  level 0 (no approval)" in done.stdout
    listed = json.loads(sconnect("tools", "list", "--json").stdout)
    assert {tool["name"]: tool["level"] for tool in listed}["send_payment"] == 3


def test_tools_run_through_the_sandbox(state_dir: Path) -> None:
    done = sconnect("tools", "run", "calculator", "--args", '{"expression": "17*23"}', "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"expression": "17*23", "result": 391}
    whole = json.loads(
        sconnect("tools", "run", "clock", "--json", "--state-dir", str(state_dir)).stdout
    )
    assert whole["status"] == "ok" and whole["subject"].startswith("operator:")
    assert set(whole) == {"status", "output", "reason", "action_id", "subject"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["teleport"], 2, "no tool named 'teleport'"),
        (["calculator", "--args", "{nope"], 2, "--args is not JSON"),
        (["calculator", "--args", '{"expr": "1"}'], 2, "invalid arguments for calculator"),
        (["calculator", "--args", '{"expression": "1/0"}'], 1, "error"),
    ],
)
def test_tools_run_bad_requests(state_dir: Path, args: list[str], code: int, message: str) -> None:
    done = sconnect("tools", "run", *args, "--state-dir", str(state_dir))
    assert done.returncode == code
    assert message in done.stderr


def test_token_issue_mints_what_the_server_accepts(state_dir: Path) -> None:
    done = sconnect("token", "issue", "--sub", "alice", "--role", "user", "--ttl", "1h", "--state-dir", str(state_dir),
                    env={"SCONNECT_JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == ["user"]
    assert 3500 < claims["exp"] - claims["iat"] <= 3600


def test_token_issue_without_a_key_says_what_to_set(state_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCONNECT_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine", "token", "issue", "--sub", "a", "--state-dir", str(state_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "SCONNECT_JWT_SECRET" in done.stderr


def test_token_issue_refuses_a_bad_ttl(state_dir: Path) -> None:
    done = sconnect("token", "issue", "--sub", "a", "--ttl", "5 parsecs", "--state-dir", str(state_dir),
                    env={"SCONNECT_JWT_SECRET": SECRET})
    assert done.returncode == 2 and "is not a duration" in done.stderr


def test_protocol_schema_is_json_schema() -> None:
    done = sconnect("protocol", "schema")
    schema = json.loads(done.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "user_message" in json.dumps(schema)


def test_serve_on_a_port_in_use_says_so_in_one_line(state_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"SCONNECT_JWT_SECRET": SECRET}
        done = sconnect("serve", "--port", str(port), "--state-dir", str(state_dir), env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"sconnect: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(pick another --port, or 0 for a free one)"
    )
    assert "Traceback" not in done.stderr


def test_token_issue_warns_about_roles_no_policy_declares(state_dir: Path) -> None:
    done = sconnect("token", "issue", "--sub", "a", "--role", "wizard", "--state-dir", str(state_dir),
                    env={"SCONNECT_JWT_SECRET": SECRET})
    assert done.returncode == 0
    assert "no policy declares the role 'wizard'" in done.stderr


def test_version() -> None:
    done = sconnect("--version")
    assert done.returncode == 0 and done.stdout.startswith("sconnect ")


def test_tools_run_failure_prints_the_reason_not_a_traceback(state_dir: Path) -> None:
    done = sconnect("tools", "run", "calculator", "--args", '{"expression": "1/0"}', "--state-dir", str(state_dir))
    assert done.returncode == 1 and done.stdout == ""
    assert "ValueError: division by zero" in done.stderr and "Traceback" not in done.stderr
    verbose = sconnect("tools", "run", "calculator", "--args", '{"expression": "1/0"}', "--verbose",
                       "--state-dir", str(state_dir))
    assert "Traceback" in verbose.stderr
