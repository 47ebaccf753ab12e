"""`sconnect tools run` decides, approves and audits like the server: nothing runs unrecorded.

Each test runs the real command in a subprocess on a private state directory and then
reads the real audit log:
- a level-0 call runs as the operator and leaves a decision and an execution record;
- the level-3 `send_payment` is refused by the policy, audited, and writes no ledger;
- a level-2 call cannot be approved from the command line: refused, audited as cancelled,
  nothing written; level 1 needs `--yes` (or a terminal);
- `--sub`/`--role` decide as that subject (an undeclared role is denied by default);
- while a server holds the state directory's audit log, the command refuses and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from engine.audit import query
from tests.cli.test_commands import sconnect


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="sconnect-run-", dir="/tmp"))
    os.chmod(base, 0o711)
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


def _records(state_dir: Path, target: str) -> list[tuple[str, str]]:
    return [(r.kind, r.outcome) for r in query(state_dir) if r.target == target]


def _run(state_dir: Path, *args: str) -> tuple[int, str, str]:
    done = sconnect("tools", "run", *args, "--state-dir", str(state_dir))
    return done.returncode, done.stdout, done.stderr


def test_level_0_runs_as_the_operator_and_is_audited(state_dir: Path) -> None:
    code, out, err = _run(state_dir, "calculator", "--args", '{"expression": "6*7"}', "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and result["output"]["result"] == 42
    assert _records(state_dir, "calculator") == [("decision", "allow"), ("execution", "ok")]
    [decision] = [r for r in query(state_dir) if r.kind == "decision"]
    assert decision.subject == result["subject"] and decision.subject.startswith("operator:")


def test_level_3_is_refused_by_policy_and_audited(state_dir: Path) -> None:
    code, _, err = _run(state_dir, "send_payment", "--args",
                        '{"amount": 20, "currency": "EUR", "recipient": "bob", "memo": "x"}', "--yes")
    assert code == 1 and "send_payment: denied" in err and "level 3" in err
    assert _records(state_dir, "send_payment") == [("decision", "deny")]
    assert not list(state_dir.rglob("payments*"))


def test_level_2_cannot_be_approved_from_the_command_line(state_dir: Path) -> None:
    code, _, err = _run(state_dir, "write_file", "--args", '{"path": "x.txt", "content": "hi"}', "--yes")
    assert code == 1 and "write_file: cancelled" in err and "another admin" in err
    assert _records(state_dir, "write_file") == [("decision", "require_approval"), ("approval", "cancelled")]
    assert not list(state_dir.rglob("x.txt"))


def test_level_1_needs_yes_without_a_terminal(state_dir: Path) -> None:
    code, _, err = _run(state_dir, "list_files", "--args", "{}")
    # list_files is level 0 in the shipped config; read_file is level 1.
    assert code == 0, err
    code, _, err = _run(state_dir, "read_file", "--args", '{"path": "nothing.txt"}')
    assert code == 1 and "stdin is not a terminal; --yes approves" in err and "read_file: denied" in err
    code, _, err = _run(state_dir, "read_file", "--args", '{"path": "nothing.txt"}', "--yes")
    # Approved, so it ran (and found no such file): the execution is on record.
    assert code == 1 and "read_file: error" in err
    assert _records(state_dir, "read_file")[-2:] == [("approval", "approved"), ("execution", "error")]


def test_sub_and_role_decide_as_that_subject(state_dir: Path) -> None:
    code, _, err = _run(state_dir, "calculator", "--args", '{"expression": "1"}', "--sub", "alice", "--role", "user")
    assert code == 0, err
    code, _, err = _run(state_dir, "calculator", "--args", '{"expression": "1"}', "--sub", "mallory", "--role", "guest")
    assert code == 1 and "calculator: denied" in err
    subjects = [(r.subject, r.outcome) for r in query(state_dir) if r.kind == "decision"]
    assert subjects == [("alice", "allow"), ("mallory", "deny")]


async def test_refused_while_a_server_runs_there(state_dir: Path, nursery: trio.Nursery, tmp_path: Path) -> None:
    from engine.auth import AuthSettings
    from engine.server import ServerSettings, serve
    from tests.engine.conftest import copy_example_config

    config = copy_example_config(tmp_path / "config")
    settings = ServerSettings(config_dir=config, state_dir=state_dir, auth=AuthSettings(secret=b"x" * 32), port=0)
    handle = await nursery.start(serve, settings)
    done = await trio.to_thread.run_sync(
        lambda: sconnect("tools", "run", "calculator", "--args", '{"expression": "1"}', "--state-dir", str(state_dir))
    )
    assert done.returncode == 2 and "a server is running on" in done.stderr and "/call calculator" in done.stderr
    handle.stop()
