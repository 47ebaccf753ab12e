"""The audit log on PostgreSQL, in process: several writers (as several instances, each
with its own state directory and the one shared key file) append to one chain.

- concurrent writers never fork the chain: seq is gap-free, every prev_hash links, and
  ``verify_shared`` finds nothing wrong; checkpoints of every writer chain into one;
- the tables refuse UPDATE, DELETE and TRUNCATE; someone who disables the triggers and
  edits a record is caught by verify (``edited``); one who inserts a record past the
  signed head is refused by the next commit of any instance (nothing is adopted) and
  reported as ``appended``; a head row changed without the key is refused and reported;
- an instance holding another key is refused at start, naming both key ids; a fresh
  database with no key anywhere gets one created by the first writer;
- a log cut back (this host's head file names a checkpoint the database lost) is refused;
- tail and query read the shared log; a database migrated by a newer program is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import trio

from engine.audit import (
    AuditAdoptionError,
    AuditError,
    AuditKeyError,
    AuditWriteError,
    PgAuditLog,
    verify_shared,
)
from engine.audit._record import GENESIS_HASH
from tests.audit.conftest import ANY_KEY, event


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "shared-keys" / "audit-key"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(os.urandom(32))
    path.chmod(0o400)
    return path


def _state(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(mode=0o700)
    return path


async def _writer(nursery: trio.Nursery, state: Path, url: str, key_file: Path, **options: object) -> PgAuditLog:
    log = await PgAuditLog.connect(state, url, key_file=key_file, **options)  # type: ignore[arg-type]
    await nursery.start(log.run)
    return log


def _tamper(url: str, *statements: str) -> None:
    """Someone with write access to the database: triggers off for this session."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement.encode())


async def test_concurrent_writers_make_one_chain(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        logs = [await _writer(nursery, _state(tmp_path, f"i{n}"), pg_url, key_file, checkpoint_every=7)
                for n in range(3)]

        async def client(log: PgAuditLog, base: int) -> None:
            for i in range(base, base + 40):
                await log.record(event(i))

        async with trio.open_nursery() as clients:
            for n, log in enumerate(logs):
                for c in range(3):
                    clients.start_soon(client, log, (n * 3 + c) * 1000)
        assert sum(log.records_written for log in logs) == 360
        for log in logs:
            await log.aclose()
    with psycopg.connect(pg_url) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_records ORDER BY seq")]
        reasons = [r[0] for r in conn.execute("SELECT reason FROM audit_checkpoints ORDER BY id")]
    assert seqs == list(range(1, 361))
    assert reasons.count("open") == 3 and reasons.count("shutdown") == 3 and "periodic" in reasons
    report = verify_shared(pg_url, state_dir=tmp_path / "i0", key_file=key_file)
    assert report.ok, report.problems
    assert (report.records, report.head_seq) == (360, 360)


async def test_the_tables_are_append_only(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        await log.record(event(1))
        await log.aclose()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE audit_records SET subject = 'x'", "DELETE FROM audit_records",
                          "TRUNCATE audit_records", "DELETE FROM audit_checkpoints"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement.encode())


async def test_an_edited_record_is_reported(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        for i in range(5):
            await log.record(event(i))
        await log.aclose()
    _tamper(pg_url, "UPDATE audit_records SET outcome = 'ok' WHERE seq = 3")
    report = verify_shared(pg_url, key_file=key_file)
    assert not report.ok
    assert report.first_problem is not None and (report.first_problem.seq, report.first_problem.kind) == (3, "edited")


async def test_a_record_inserted_past_the_head_is_never_adopted(pg_url: str, tmp_path: Path,
                                                                 key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        last = await log.record(event(1))
        # A forged record that chains perfectly (hashes are not secret), inserted directly.
        forged = event(2, subject="mallory").prepare(digest_key=ANY_KEY).seal(last.seq + 1, last.hash)
        columns = ", ".join(["%s"] * len(forged.row()))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO audit_records VALUES ({columns})".encode(), forged.row())
        with pytest.raises(AuditWriteError, match="lie past the signed head"):
            await log.record(event(3))
        await log.aclose()
    report = verify_shared(pg_url, key_file=key_file)
    kinds = {(p.seq, p.kind) for p in report.problems}
    assert (2, "appended") in kinds, report.problems
    # A new instance refuses to join it as well.
    with pytest.raises(AuditAdoptionError, match="lie past the signed head"):
        await PgAuditLog.connect(_state(tmp_path, "b"), pg_url, key_file=key_file)


async def test_a_head_changed_without_the_key_is_refused(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        await log.record(event(1))
        await log.record(event(2))
        _tamper(pg_url, "UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit_records WHERE seq = 1)")
        with pytest.raises(AuditWriteError, match="not signed with this instance's key"):
            await log.record(event(3))
        await log.aclose()
    report = verify_shared(pg_url, key_file=key_file)
    assert any("head row (seq 1) does not verify" in p.message for p in report.problems), report.problems


async def test_another_key_is_refused_at_start(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        await log.record(event(1))
        other = tmp_path / "other-key"
        other.write_bytes(os.urandom(32))
        other.chmod(0o400)
        with pytest.raises(AuditKeyError, match="every instance on one database needs the same key file"):
            await PgAuditLog.connect(_state(tmp_path, "b"), pg_url, key_file=other)
        await log.aclose()


async def test_the_first_writer_of_a_fresh_database_creates_the_key(pg_url: str, tmp_path: Path) -> None:
    state = _state(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        log = await PgAuditLog.connect(state, pg_url)
        await nursery.start(log.run)
        await log.record(event(1))
        await log.aclose()
    key = tmp_path / "a-keys" / "audit-key"
    assert key.stat().st_mode & 0o777 == 0o400
    # A second host without it is refused: the shared log names a key it does not have.
    with pytest.raises(AuditKeyError, match="is missing"):
        await PgAuditLog.connect(_state(tmp_path, "b"), pg_url)
    assert verify_shared(pg_url, state_dir=state).ok


async def test_a_log_cut_back_is_refused_by_the_head_file(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    state = _state(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, state, pg_url, key_file)
        await log.record(event(1))
        await log.aclose()
    # The last checkpoint (this host's shutdown) disappears, as in a restore of an older copy.
    _tamper(pg_url, "DELETE FROM audit_checkpoints WHERE id = (SELECT max(id) FROM audit_checkpoints)")
    with pytest.raises(AuditAdoptionError, match="names a checkpoint the log does not hold"):
        await PgAuditLog.connect(state, pg_url, key_file=key_file)
    report = verify_shared(pg_url, state_dir=state, key_file=key_file)
    assert any(p.kind == "truncated" for p in report.problems), report.problems


async def test_tail_and_query_read_the_shared_log(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    async with trio.open_nursery() as nursery:
        a = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        b = await _writer(nursery, _state(tmp_path, "b"), pg_url, key_file)
        for i in range(6):
            await (a if i % 2 else b).record(event(i))
        assert [r.seq for r in await a.tail(3)] == [4, 5, 6]
        assert {r.subject for r in await b.query(subject="bob")} == {"bob"}
        assert len(await b.query(subject="bob")) == 2
        await a.aclose()
        await b.aclose()


async def test_an_empty_database_verifies_and_a_missing_log_is_named(pg_url: str) -> None:
    from engine.audit import AuditNotFoundError

    with pytest.raises(AuditNotFoundError, match="no audit log in the database"):
        verify_shared(pg_url, key_file=None)


async def test_a_newer_audit_schema_is_refused(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (component TEXT, version INTEGER, description TEXT, "
                     "applied_at DOUBLE PRECISION, PRIMARY KEY (component, version))")
        conn.execute("INSERT INTO schema_migrations VALUES ('audit', 9, 'future', 0)")
    with pytest.raises(AuditError, match="audit schema in the database is at version 9"):
        await PgAuditLog.connect(_state(tmp_path, "a"), pg_url, key_file=key_file)


def test_genesis_is_what_the_schema_starts_from() -> None:
    assert GENESIS_HASH == "0" * 64


async def test_verify_log_checks_the_shared_log_a_server_writes(pg_url: str, tmp_path: Path, key_file: Path) -> None:
    """What the console's audit view runs: the writer's own log, with its key and head file."""
    from engine.audit import verify_log

    async with trio.open_nursery() as nursery:
        log = await _writer(nursery, _state(tmp_path, "a"), pg_url, key_file)
        for i in range(3):
            await log.record(event(i))
        report = await trio.to_thread.run_sync(verify_log, log)
        assert report.ok and report.records == 3, report.problems
        _tamper(pg_url, "UPDATE audit_records SET subject = 'x' WHERE seq = 2")
        report = await trio.to_thread.run_sync(verify_log, log)
        assert report.first_problem is not None and report.first_problem.kind == "edited"
        await log.aclose()
