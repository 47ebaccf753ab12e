"""The record's stored and hashed form does not change with the code that makes it.

- ``test_log_written_by_an_earlier_version_verifies``: ``tests/data/audit-v1`` is a log
  (its database as the SQL dump ``audit.sql``)
  (8 records, open and shutdown checkpoints, head file, key) written by the writer
  before ``Prepared`` and ``AuditRecord`` shared one declaration of their fields
  (:class:`engine.audit._record.RecordFacts`); a copy of it verifies clean, and every
  stored row recomputes its stored hash.
- ``test_sealed_hash_is_pinned``: one event prepared and sealed at a fixed time gives
  the exact row and hash the earlier version gave (a golden value: any change to the
  canonical form, a field's name or its treatment fails here).
- ``test_record_and_prepared_share_their_facts``: the facts a record carries are the
  prepared event's, field for field; the record adds only its place in the chain.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import attrs

from engine.audit import AuditRecord, verify
from engine.audit._record import COLUMNS, Prepared, RecordFacts

from .conftest import ANY_KEY, event

EARLIER_LOG = Path(__file__).parents[1] / "data" / "audit-v1"


def test_log_written_by_an_earlier_version_verifies(tmp_path: Path) -> None:
    shutil.copytree(EARLIER_LOG, tmp_path / "log")
    state, keys = tmp_path / "log" / "state", tmp_path / "log" / "state-keys"
    # The database is kept as its SQL dump (a repository carries no .db file): rebuilt as it was.
    built = sqlite3.connect(state / "audit.db")
    try:
        built.executescript((state / "audit.sql").read_text(encoding="utf-8"))
    finally:
        built.close()
    # Git keeps no modes: give the copy the ones the writer gave the original.
    keys.chmod(0o700)
    (keys / "audit-key").chmod(0o400)
    report = verify(state)
    assert report.problems == ()
    assert report.warnings == ()
    assert (report.records, report.checkpoints, report.head_seq) == (8, 2, 8)
    conn = sqlite3.connect(state / "audit.db")
    try:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_records ORDER BY seq").fetchall()
    finally:
        conn.close()
    records = [AuditRecord.from_row(row) for row in rows]
    assert [r.computed_hash() for r in records] == [r.hash for r in records]
    assert [r.row() for r in records] == rows
    assert records[-1].hash == report.head_hash


def test_sealed_hash_is_pinned() -> None:
    record = event(3).prepare(now=1700000000.5, digest_key=ANY_KEY).seal(5, "ab" * 32)
    assert record.row() == (
        5, 1, 1700000000.5, "2023-11-14T22:13:20.500000Z", "execution", "alice", "s3", "assistant", "tool.call",
        "shell", '{"n":3,"path":"/tmp/f3","token":"[redacted]"}',
        "hmac-sha256:095490db175783e6239c3d624273e4ac66f0df7d3eacaf7f7a776d3b8b77d467",
        '{"effect":"allow","rule_ids":["r-base"]}', "rule", None, "ok", 4.5, "rev-1", '{"i":3}', "ab" * 32,
        "013649a17b26f34c1bcc05d761db9af8d5af1118223698565e64b2ddaa1fd692",
    )
    assert record.computed_hash() == record.hash


def test_record_and_prepared_share_their_facts() -> None:
    prepared = event(1).prepare(now=1700000000.0, digest_key=ANY_KEY)
    record = prepared.seal(1, "0" * 64)
    facts = [f.name for f in attrs.fields(RecordFacts)]
    assert [f.name for f in attrs.fields(Prepared)] == facts
    assert [getattr(record, name) for name in facts] == [getattr(prepared, name) for name in facts]
    assert set(COLUMNS) - set(facts) == {"seq", "version", "prev_hash", "hash"}
