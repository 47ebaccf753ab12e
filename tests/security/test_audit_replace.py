"""Replacing the audit history without the key (issue 11, item 14).

The attack: someone who can write the state directory deletes ``audit.db`` and
``audit-checkpoints.log`` and writes a fresh, correctly chained log of invented records
with the engine's own code (as anyone holding the code would). Before, one ordinary
restart signed it and ``audit verify`` said OK.

- ``test_a_forged_history_is_refused_at_start_and_reported``: a real server writes
  records (a tool call, an auth failure), stops; the attacker forges a 5-record chain in
  place of the log; the restart refuses (exit 2, naming the problem, ``audit verify`` and
  ``audit archive``) and signs nothing; ``sconnect audit verify`` exits 1 naming the
  missing checkpoints and the head file's checkpoint the log no longer holds; the
  operator's ``sconnect audit archive`` sets the forgery aside and the next start works.
- ``test_forgery_without_the_head_file_is_still_refused``: the attacker also deletes the
  head file beside the key: records without any checkpoint are still refused.
- ``test_a_rewritten_database_under_the_old_checkpoints_is_refused``: only ``audit.db``
  replaced, the genuine checkpoint file kept: the record the last checkpoint pinned no
  longer matches, the restart refuses.
- ``test_a_deleted_checkpoint_file_is_reported_as_deleted``: ``audit-checkpoints.log``
  deleted and the server restarted: verify names it ``deleted`` (it used to say the file
  was "edited").
- ``test_the_key_lives_outside_the_state_directory``: after a real start, nothing in the
  state directory holds the key; it is 0400 in ``<state>-keys/``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected

from engine.audit import AuditEvent, AuditLog, default_key_path, head_path, tail, verify
from engine.audit._db import connect_writer
from engine.audit._record import COLUMNS, GENESIS_HASH
from engine.client import open_client

from .cliserver import SECRET, place, refused_start, sconnect, serving

LOG_FILES = ("audit.db", "audit.db-wal", "audit.db-shm", "audit-checkpoints.log")


def _token(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


def forge(state: Path, count: int) -> list[str]:
    """What an attacker with the code writes: a new audit.db, a correct chain, no checkpoint
    (signing one needs the key). Returns the forged hashes."""
    for name in LOG_FILES:
        (state / name).unlink(missing_ok=True)
    conn = connect_writer(state / "audit.db")
    prev, hashes = GENESIS_HASH, []
    for seq in range(1, count + 1):
        record = AuditEvent(kind="approval", subject="mallory", action="tool.call", target="send_payment",
                            arguments={"amount": 9999, "to": "acct-mallory"}, decided_by="person",
                            approver="root", outcome="approved").prepare(digest_key=os.urandom(32)).seal(seq, prev)
        conn.execute(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                     record.row())
        prev = record.hash
        hashes.append(record.hash)
    conn.close()
    return hashes


async def _some_records(url: str) -> None:
    with trio.fail_after(30):
        async with open_client(url, _token()) as client:
            result = await client.call_tool("calculator", {"expression": "6*7"})
            assert str(result.status) == "ok"
        with pytest.raises(ConnectionRejected):
            async with open_client(url, "not-a-jwt"):
                pass


@pytest.mark.slow
async def test_a_forged_history_is_refused_at_start_and_reported() -> None:
    with place() as where:
        async with serving(where) as served:
            await _some_records(served.url)
        genuine = verify(where.state)
        assert genuine.ok and genuine.records >= 3, genuine.problems

        forged = forge(where.state, 5)
        assert not (where.state / "audit-checkpoints.log").exists()

        refused = await refused_start(where)
        assert refused.code == 2, refused.stderr
        assert "refusing to continue this audit log" in refused.stderr
        assert f"sconnect audit verify --state-dir {where.state}" in refused.stderr
        assert f"sconnect audit archive --state-dir {where.state}" in refused.stderr
        # Nothing was signed or added: the forgery is exactly as the attacker left it.
        assert [r.hash for r in tail(where.state, 100)] == forged
        assert not (where.state / "audit-checkpoints.log").read_bytes()

        checked = await sconnect("audit", "verify", "--state-dir", str(where.state))
        assert checked.code == 1, checked.stdout + checked.stderr
        assert checked.stdout.startswith("FAILED:")
        assert "the head file names checkpoint" in checked.stdout and "no longer holds" in checked.stdout
        assert "the log has records but no checkpoint at all" in checked.stdout

        # The operator's step: keep the forgery as evidence, start a new log.
        archived = await sconnect("audit", "archive", "--state-dir", str(where.state))
        assert archived.code == 0, archived.stderr
        archive = Path(archived.stdout.split(" to ", 1)[1].split(";", 1)[0])
        assert [r.hash for r in tail(archive, 100)] == forged
        async with serving(where) as served:
            await _some_records(served.url)
        assert verify(where.state).ok
        again = await sconnect("audit", "verify", "--state-dir", str(archive), "--key-file",
                               str(default_key_path(where.state)))
        assert again.code == 1  # the archived forgery still fails, with the right key


async def test_forgery_without_the_head_file_is_still_refused(tmp_path: Path, nursery: trio.Nursery) -> None:
    state = tmp_path / "state"
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    await log.record(AuditEvent(kind="execution", subject="alice", outcome="ok"))
    await log.aclose()
    forge(state, 3)
    head_path(state).unlink()
    with pytest.raises(Exception, match="holds 3 records but no checkpoint at all") as info:
        await AuditLog.open(state)
    assert type(info.value).__name__ == "AuditAdoptionError"
    assert not (state / "audit-checkpoints.log").read_bytes()  # nothing signed


async def test_a_rewritten_database_under_the_old_checkpoints_is_refused(tmp_path: Path, nursery: trio.Nursery) -> None:
    state = tmp_path / "state"
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    for _ in range(3):
        await log.record(AuditEvent(kind="execution", subject="alice", outcome="ok"))
    await log.aclose()
    kept = (state / "audit-checkpoints.log").read_bytes()
    forge(state, 3)
    (state / "audit-checkpoints.log").write_bytes(kept)
    with pytest.raises(Exception, match="record 3 is not the one checkpoint 2 pinned"):
        await AuditLog.open(state)
    report = verify(state)
    assert report.first_problem is not None and report.first_problem.kind == "rewritten", report.problems


async def test_a_deleted_checkpoint_file_is_reported_as_deleted(tmp_path: Path, nursery: trio.Nursery) -> None:
    state = tmp_path / "state"
    for _ in range(2):  # two runs: checkpoints 1..4
        log = await AuditLog.open(state)
        await nursery.start(log.run)
        await log.record(AuditEvent(kind="execution", subject="alice", outcome="ok"))
        await log.aclose()
    (state / "audit-checkpoints.log").unlink()
    log = await AuditLog.open(state)  # the restart: the table still vouches for the records
    await nursery.start(log.run)
    await log.aclose()
    report = verify(state)
    assert [p.kind for p in report.problems] == ["deleted"], report.problems
    assert "checkpoints 1..4 are in the table but not in audit-checkpoints.log" in report.problems[0].message
    assert "the file was deleted" in report.problems[0].message


async def test_the_key_lives_outside_the_state_directory() -> None:
    with place() as where:
        async with serving(where) as served:
            await _some_records(served.url)
        key = default_key_path(where.state)
        assert key.parent == where.base / "state-keys"
        assert stat.S_IMODE(key.stat().st_mode) == 0o400
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        secret = key.read_bytes()
        for path in where.state.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path
        assert "engine.audit.checkpoint" in served.stderr  # each checkpoint logged for shipping
