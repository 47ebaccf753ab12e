"""``sconnect audit verify|tail|query`` as a user runs them: exit codes and output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from engine.audit import default_key_path
from engine.cli.main import main
from tests.conftest import REPO

from .conftest import attacker, write_log


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_verify_ok_then_tampered(state: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]) -> None:
    records = await write_log(state, nursery, 6)
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 0
    assert out.startswith(f"OK: 6 records, 2 checkpoints, head 6/{records[-1].hash[:16]}")
    attacker(state).execute("UPDATE audit_records SET subject = 'nobody' WHERE seq = 2")
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 1
    assert out.startswith("FAILED: seq 2: edited: its content no longer matches its hash")
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["first_problem"] == {"seq": 2, "kind": "edited",
                                       "message": "its content no longer matches its hash"}


def test_no_audit_log_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "verify", "--state-dir", str(tmp_path))
    assert code == 2 and "no audit log" in err
    assert not (tmp_path / "audit.db").exists()  # reading never creates one


async def test_tail_and_query(state: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]) -> None:
    await write_log(state, nursery, 9)
    code, out, _ = run(capsys, "audit", "tail", "-n", "2", "--state-dir", str(state))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split() == ["SEQ", "TIME", "(UTC)", "KIND", "SUBJECT", "ACTION", "TARGET", "DECISION",
                                "BY", "OUTCOME", "MS"]
    assert lines[2].split()[0] == "9" and "send_payment" in lines[2] and "denied" in lines[2]
    code, out, _ = run(capsys, "audit", "query", "--state-dir", str(state), "--subject", "alice",
                       "--tool", "shell", "--since", "1h", "--json")
    found = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in found] == [1, 4, 7]
    assert found[0]["arguments"]["token"] == "[redacted]"
    code, _, err = run(capsys, "audit", "query", "--state-dir", str(state), "--since", "last tuesday")
    assert code == 2 and "neither an ISO time" in err


async def test_the_installed_command(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 2)
    with trio.fail_after(30):
        done = await trio.run_process([sys.executable, "-m", "engine", "audit", "verify", "--state-dir", str(state)],
                                      cwd=REPO, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("OK: 2 records, 2 checkpoints")


async def test_a_missing_key_is_not_tampering(state: Path, nursery: trio.Nursery,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 3 when the key cannot be read (nothing known to be wrong), 1 when tampered."""
    await write_log(state, nursery, 3)
    key = default_key_path(state)
    moved = key.with_name("elsewhere")
    key.rename(moved)
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 3, out
    assert out.startswith("CANNOT VERIFY: key: cannot check the checkpoints: audit key") and "is missing" in out
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state), "--json")
    assert code == 3 and json.loads(out)["first_problem"]["kind"] == "key"
    attacker(state).execute("UPDATE audit_records SET subject = 'nobody' WHERE seq = 2")
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 1 and out.startswith("FAILED: seq 2: edited")  # tampering wins over the missing key
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state), "--key-file", str(moved))
    assert code == 1


async def test_archive_sets_a_log_aside(state: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]) -> None:
    await write_log(state, nursery, 2)
    code, out, _ = run(capsys, "audit", "archive", "--state-dir", str(state))
    assert code == 0 and out.startswith(f"archived the audit log to {state}/audit-archive-")
    archive = Path(out.split(" to ", 1)[1].split(";", 1)[0])
    assert sorted(os.listdir(archive)) == ["audit-checkpoints.log", "audit-head", "audit.db"]
    code, _, err = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 2 and "no audit log" in err
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(archive), "--key-file",
                       str(default_key_path(state)))
    assert code == 0, out
    await write_log(state, nursery, 1)  # the next start begins a new log under the same key
    code, out, _ = run(capsys, "audit", "verify", "--state-dir", str(state))
    assert code == 0 and out.startswith("OK: 1 records")
    code, _, err = run(capsys, "audit", "archive", "--state-dir", str(state / "nowhere"))
    assert code == 2 and "no audit log to archive" in err
