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
- ``test_canonical_json_is_json_dumps``: the canonical form (made by calling the C
  encoder directly) is ``json.dumps`` with its documented options, value for value, and
  refuses what it refuses with the same errors.
- ``test_prepared_text_fields_are_their_plain_forms``: the fields ``prepare`` writes
  out by hand (the decision, the ISO time) equal ``canonical_json`` of the decision and
  ``strftime`` of the time, for odd strings and years.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from engine.audit import AuditEvent, AuditRecord, verify
from engine.audit._record import COLUMNS, Prepared, RecordFacts, iso_time
from engine.canonical import canonical_json

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


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _outcome(make: Any, value: Any) -> tuple[str, str]:
    try:
        return "ok", make(value)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


def test_canonical_json_is_json_dumps() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    good = [
        {"b": 1, "a": [1, 2.5, None, True, False, "é\u2028\"\\\t"], "c": {"z": {}, "y": []}},
        "text", 0, -0.0, 1e300, 10**30, None, [], (1, (2, 3)), {"\U0001f600": 1, "a": {"ÿ": "zoë"}},
    ]
    for value in good:
        assert canonical_json(value) == _dumps(value)
    bad = [{"a": float("nan")}, {"a": float("inf")}, {"a": {1, 2}}, {"a": b"bytes"}, {1: 2, "a": 1}, cycle]
    for value in bad:
        assert _outcome(canonical_json, value) == _outcome(_dumps, value)
    with pytest.raises(ValueError, match="not valid Unicode"):
        canonical_json({"a": "\ud800"})  # json.dumps writes it; canonical JSON refuses it


@pytest.mark.parametrize(("effect", "rule_ids"), [
    ("allow", ()), (None, ("r1",)), ("deny", ("r-1", "zoë \"quoted\" \\ \u2028", "\U0001f600")),
])
# Years 1000 and 999 on either side of the padded/unpadded strftime boundary; year 1; year 9999.
@pytest.mark.parametrize("at", [1700000000.5, 0.0, 1.0000005, 253402300799.5, -30610224000.0, -30610224001.0,
                                -62135596800.0])
def test_prepared_text_fields_are_their_plain_forms(effect: str | None, rule_ids: tuple[str, ...], at: float) -> None:
    prepared = AuditEvent(kind="decision", effect=effect, rule_ids=rule_ids).prepare(now=at, digest_key=ANY_KEY)
    assert prepared.decision == canonical_json({"effect": effect, "rule_ids": list(rule_ids)})
    assert prepared.time_iso == datetime.fromtimestamp(prepared.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso_time(prepared.time) == prepared.time_iso


@pytest.mark.parametrize("length", [0, 1, 100, 2047, 2048, 100_000])
def test_keyed_text_digest_is_the_hmac_of_the_text(length: int) -> None:
    import hmac

    from engine.canonical import KEYED_PREFIX, keyed_text_digest

    text = ("é" * length) + "x"
    for key in (b"k" * 32, b"another key of more than 32 bytes!"):
        expected = KEYED_PREFIX + hmac.digest(key, text.encode("utf-8"), "sha256").hex()
        # Twice: the second digest comes from the same keyed HMAC, copied again.
        assert keyed_text_digest(key, text) == expected == keyed_text_digest(key, text)


def test_keyed_text_digest_refuses_a_short_key() -> None:
    from engine.canonical import keyed_text_digest

    with pytest.raises(ValueError, match="at least 32 bytes"):
        keyed_text_digest(b"k" * 31, "{}")
