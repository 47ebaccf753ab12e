"""Tampering with the audit database, as someone with write access to the files would
(triggers dropped first), is detected by verify and the first bad record is named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from engine.audit import AuditAdoptionError, AuditEvent, AuditLog, AuditRecord, default_key_path, verify
from engine.audit._record import COLUMNS

from .conftest import ANY_KEY, attacker, event, write_log

N = 10


async def test_untouched_log_verifies(state: Path, nursery: trio.Nursery) -> None:
    records = await write_log(state, nursery, N)
    report = verify(state)
    assert report.ok, report.problems
    assert (report.records, report.head_seq, report.head_hash) == (N, N, records[-1].hash)
    assert report.checkpoints == 2  # open at seq 0, shutdown at seq N
    assert report.last_checkpoint is not None and report.last_checkpoint.reason == "shutdown"
    assert report.warnings == ()


async def test_triggers_refuse_update_and_delete(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 3)
    conn = sqlite3.connect(state / "audit.db", isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
        conn.execute("UPDATE audit_records SET outcome = 'ok' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        conn.execute("DELETE FROM audit_records WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        conn.execute("DELETE FROM audit_checkpoints")
    assert conn.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0] == 3
    assert verify(state).ok


async def test_edited_field_names_that_record(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    attacker(state).execute("UPDATE audit_records SET outcome = 'ok' WHERE seq = 5")  # was 'error'
    report = verify(state)
    assert not report.ok
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (5, "edited")
    assert len(report.problems) == 1  # the next record still links to the original hash


async def test_edited_arguments_with_hash_recomputed_breaks_the_next_link(state: Path, nursery: trio.Nursery) -> None:
    records = await write_log(state, nursery, N)
    conn = attacker(state)
    forged = json.dumps({"n": 4, "path": "/etc/shadow", "token": "[redacted]"}, separators=(",", ":"), sort_keys=True)
    row = dict(zip(COLUMNS, conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_records WHERE seq = 5")
                   .fetchone(), strict=True))
    row["arguments"] = forged
    new_hash = AuditRecord(**row).computed_hash()
    conn.execute("UPDATE audit_records SET arguments = ?, hash = ? WHERE seq = 5", (forged, new_hash))
    report = verify(state)
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (6, "inserted")
    assert "record 5 was rewritten" in report.first_problem.message
    assert records[4].hash != new_hash


async def test_deleted_row_is_named(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    attacker(state).execute("DELETE FROM audit_records WHERE seq = 4")
    report = verify(state)
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (4, "deleted")
    assert "record 4 is missing" in report.first_problem.message


async def test_swapped_rows_are_named(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    conn = attacker(state)
    cols = [c for c in COLUMNS if c != "seq"]
    three = conn.execute(f"SELECT {', '.join(cols)} FROM audit_records WHERE seq = 3").fetchone()
    seven = conn.execute(f"SELECT {', '.join(cols)} FROM audit_records WHERE seq = 7").fetchone()
    assign = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE audit_records SET {assign} WHERE seq = 3", seven)
    conn.execute(f"UPDATE audit_records SET {assign} WHERE seq = 7", three)
    report = verify(state)
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "reordered"), (7, "reordered")]
    assert "written as seq 7" in report.problems[0].message


async def test_forged_row_appended_after_shutdown_is_caught(state: Path, nursery: trio.Nursery) -> None:
    records = await write_log(state, nursery, N)
    # The attacker knows the format and chains the forged record correctly.
    forged = AuditEvent(kind="approval", subject="mallory", action="tool.call", target="send_payment",
                        decided_by="person", approver="admin", outcome="approved").prepare(digest_key=ANY_KEY)
    record = forged.seal(N + 1, records[-1].hash)
    assert record.computed_hash() == record.hash
    attacker(state).execute(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})", record.row())
    report = verify(state)
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (N + 1, "appended")
    assert "after the final shutdown checkpoint" in report.first_problem.message


async def test_forged_rows_after_shutdown_are_refused_by_the_next_start(state: Path, nursery: trio.Nursery) -> None:
    records = await write_log(state, nursery, 3)
    record = event(99).prepare(digest_key=ANY_KEY).seal(4, records[-1].hash)
    attacker(state).execute(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})", record.row())
    with pytest.raises(AuditAdoptionError, match=r"records 4..4 follow the shutdown checkpoint 2 .*written while "
                       r"the service was stopped.*sconnect audit verify.*sconnect audit archive"):
        await AuditLog.open(state)  # the service starts again: it does not sign them
    report = verify(state)
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (4, "appended")
    assert "while the service was stopped" in report.first_problem.message
    assert report.records == 4 and report.checkpoints == 2


async def test_truncated_tail_is_caught_by_the_checkpoint(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    attacker(state).execute("DELETE FROM audit_records WHERE seq > 7")
    report = verify(state)
    assert report.first_problem is not None
    assert (report.first_problem.seq, report.first_problem.kind) == (8, "truncated")
    assert "records 8..10 were cut off" in report.first_problem.message


async def test_consistently_rebuilt_log_is_caught_by_the_checkpoint(state: Path, nursery: trio.Nursery) -> None:
    records = await write_log(state, nursery, N)
    conn = attacker(state)
    # Rewrite history: record 2's subject becomes someone else; recompute the whole chain.
    conn.execute("DELETE FROM audit_records")
    prev = records[0].prev_hash
    for original in records:
        row = dict(zip(COLUMNS, original.row(), strict=True))
        if original.seq == 2:
            row["subject"] = "nobody"
        row["prev_hash"] = prev
        rebuilt = AuditRecord(**{**row, "hash": ""})
        rebuilt = AuditRecord(**{**row, "hash": rebuilt.computed_hash()})
        conn.execute(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(COLUMNS))})", rebuilt.row())
        prev = rebuilt.hash
    report = verify(state)
    kinds = [(p.seq, p.kind) for p in report.problems]
    assert kinds == [(1, "rewritten")]  # the chain itself is consistent; only the key knows
    assert f"records 1..{N} were rewritten" in report.problems[0].message


async def test_deleted_checkpoint_rows_are_caught_by_the_file(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    attacker(state).execute("DELETE FROM audit_checkpoints WHERE id = 1")
    report = verify(state)
    assert not report.ok
    assert any("checkpoint 1 is in audit-checkpoints.log but not in the table" in p.message for p in report.problems)


async def test_deleted_checkpoint_file_is_caught_by_the_table(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    (state / "audit-checkpoints.log").unlink()
    report = verify(state)
    assert any("audit-checkpoints.log is missing" in p.message for p in report.problems)


async def test_forged_checkpoint_fails_its_mac(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, N)
    # Truncate the tail AND move both copies of the final checkpoint back to match.
    conn = attacker(state)
    conn.execute("DELETE FROM audit_records WHERE seq > 7")
    seven = conn.execute("SELECT hash FROM audit_records WHERE seq = 7").fetchone()[0]
    conn.execute("UPDATE audit_checkpoints SET seq = 7, head_hash = ? WHERE id = 2", (seven,))
    path = state / "audit-checkpoints.log"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[1].update(seq=7, head_hash=seven)
    path.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))
    report = verify(state)
    assert any("checkpoint 2: its MAC does not verify" in p.message for p in report.problems)


async def test_checkpoints_need_the_key(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 3)
    default_key_path(state).unlink()
    report = verify(state)
    assert [p.kind for p in report.problems] == ["key"] and report.key_unusable
    assert "audit key" in report.problems[0].message and "missing" in report.problems[0].message
