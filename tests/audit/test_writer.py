"""The writer: commit before return, group commits, redaction, checkpoints, shutdown,
keys, locking, and the typed errors when it is gone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from engine.audit import (
    REDACTED,
    AuditClosedError,
    AuditEvent,
    AuditKeyError,
    AuditLockedError,
    AuditLog,
    AuditRecord,
    AuditWriteError,
    default_key_path,
    query,
    tail,
    verify,
)
from engine.audit._keys import derive
from engine.canonical import canonical_json, digest, keyed_digest
from tests.conftest import REPO

from .conftest import ANY_KEY, attacker, event, write_log, write_records


async def test_record_returns_after_commit(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    other = sqlite3.connect(state / "audit.db")
    seen = []

    async def one(i: int) -> None:
        record = await log.record(event(i))
        # Another connection (another process, in effect) already sees it.
        row = other.execute("SELECT hash FROM audit_records WHERE seq = ?", (record.seq,)).fetchone()
        seen.append(row is not None and row[0] == record.hash)

    async with trio.open_nursery() as inner:
        for i in range(20):
            inner.start_soon(one, i)
    assert seen == [True] * 20
    other.close()
    await log.aclose()


async def test_200_concurrent_records_group_committed_chain_intact(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state, queue_size=64)
    await nursery.start(log.run)
    records: list[AuditRecord] = []

    async def one(i: int) -> None:
        records.append(await log.record(event(i)))

    async with trio.open_nursery() as inner:
        for i in range(200):
            inner.start_soon(one, i)
    assert sorted(r.seq for r in records) == list(range(1, 201))
    assert log.records_written == 200
    assert log.commits < 100, "concurrent records must share transactions"
    await log.aclose()
    report = verify(state)
    assert report.ok and report.records == 200, report.problems


async def test_redaction_and_digest_of_the_unredacted_arguments(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    arguments = {"to": "acct-1", "amount": 12.5, "pin": "4711", "note": {"pin": "nested stays"}}
    record = await log.record(AuditEvent(
        kind="decision", subject="alice", action="tool.call", target="send_payment",
        arguments=arguments, secret={"pin"}, effect="require_approval", rule_ids=["pay-1", "lvl-3"],
        decided_by="rule", policy_revision="abc"))
    arguments["to"] = "changed later"  # the record is a snapshot
    await log.aclose()
    stored = tail(state, 1)[0]
    assert stored == record
    data = stored.to_dict()
    assert data["arguments"] == {"to": "acct-1", "amount": 12.5, "pin": REDACTED, "note": {"pin": "nested stays"}}
    plain = {"to": "acct-1", "amount": 12.5, "pin": "4711", "note": {"pin": "nested stays"}}
    # Keyed with a key derived from the audit key: a plain hash of the arguments would
    # give the PIN away to anyone trying the 10,000 candidates.
    key = default_key_path(state).read_bytes()
    assert data["arguments_digest"] == keyed_digest(derive(key, "arguments"), plain) != digest(plain)
    assert data["decision"] == {"effect": "require_approval", "rule_ids": ["pay-1", "lvl-3"]}
    # Quoted, as JSON would hold it: bare, the digits can occur by chance in a random hash.
    assert '"4711"' not in (state / "audit.db").read_bytes().decode("latin-1")
    # hash = sha256 over the canonical JSON of every field but hash
    body = {k: v for k, v in data.items() if k != "hash"}
    assert digest(body) == record.hash and canonical_json(body)


def test_event_validation() -> None:
    with pytest.raises(ValueError, match="audit kind"):
        AuditEvent(kind="whatever")
    with pytest.raises(ValueError, match="needs the approver"):
        AuditEvent(kind="approval", decided_by="person")
    with pytest.raises(ValueError, match="decided_by"):
        AuditEvent(kind="approval", decided_by="robot")
    with pytest.raises(ValueError, match="action"):
        AuditEvent(kind="decision", action="Tool Call")
    with pytest.raises(ValueError):
        AuditEvent(kind="execution", arguments={"x": float("nan")}).prepare(digest_key=ANY_KEY)
    with pytest.raises(TypeError):
        AuditEvent(kind="execution", subject=5)  # type: ignore[arg-type]  # would be stored as '5'
    with pytest.raises(TypeError, match="collection of strings"):
        AuditEvent(kind="decision", rule_ids="r1")
    with pytest.raises(ValueError, match="not valid Unicode"):
        AuditEvent(kind="execution", target="\ud800").prepare(digest_key=ANY_KEY)
    with pytest.raises(ValueError, match="details"):
        AuditEvent(kind="execution", details={"blob": "x" * 20000}).prepare(digest_key=ANY_KEY)


async def test_record_when_the_writer_is_gone_raises_typed_error(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    await log.record(event(0))
    await log.aclose()
    with pytest.raises(AuditClosedError):
        await log.record(event(1))
    never_ran = await AuditLog.open(state)
    await never_ran.aclose()
    with pytest.raises(AuditClosedError):
        await never_ran.record(event(2))


async def test_shutdown_drains_what_is_queued(state: Path) -> None:
    log = await AuditLog.open(state)
    results: list[AuditRecord | str] = []

    async def one(i: int) -> None:
        try:
            results.append(await log.record(event(i)))
        except AuditClosedError:
            results.append("closed")

    async with trio.open_nursery() as producers:
        for i in range(50):
            producers.start_soon(one, i)
        await trio.sleep(0.01)  # all 50 are queued; the writer has not started
        async with trio.open_nursery() as writer:
            await writer.start(log.run)
            writer.cancel_scope.cancel()  # stop at once: it must still commit the queue
    committed = [r for r in results if isinstance(r, AuditRecord)]
    assert len(committed) == 50
    with pytest.raises(AuditClosedError):
        await log.record(event(51))
    await log.aclose()
    report = verify(state)
    assert report.ok and report.records == 50
    assert report.last_checkpoint is not None
    assert (report.last_checkpoint.reason, report.last_checkpoint.seq) == ("shutdown", 50)


async def test_cancelled_caller_does_not_hurt_the_writer(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    with trio.move_on_after(0):
        await log.record(event(0))  # cancelled at once: queued or not, nothing breaks
    records = await write_records(log, 5, start=1)
    await log.aclose()
    assert verify(state).ok
    assert records[-1].seq in (5, 6)


async def test_periodic_checkpoints_by_count_and_by_time(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state, checkpoint_every=4, checkpoint_interval_s=0.05)
    await nursery.start(log.run)
    await write_records(log, 9)
    assert log.last_checkpoint is not None and log.last_checkpoint.seq == 8  # by count
    await trio.sleep(0.3)
    assert log.last_checkpoint.reason == "periodic" and log.last_checkpoint.seq == 9  # by time
    await log.aclose()
    reasons = [json.loads(line)["reason"] for line in (state / "audit-checkpoints.log").read_text().splitlines()]
    assert reasons == ["open", "periodic", "periodic", "periodic", "shutdown"]
    assert verify(state).ok


async def test_files_are_private_and_the_key_can_live_elsewhere(
        state: Path, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "keys" / "audit.key"
    key.parent.mkdir()
    monkeypatch.setenv("SCONNECT_AUDIT_KEY_FILE", str(key))
    await write_log(state, nursery, 2)
    assert not (state / "audit-key").exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    for path in (state / "audit.db", state / "audit-checkpoints.log"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(key.read_bytes()) == 32
    assert verify(state).ok
    monkeypatch.delenv("SCONNECT_AUDIT_KEY_FILE")
    assert not verify(state).ok  # the default place holds no key
    assert verify(state, key_file=key).ok


async def test_key_problems_refuse_to_open(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 1)
    key = default_key_path(state)
    os.chmod(key, 0o644)
    with pytest.raises(AuditKeyError, match="chmod 400"):
        await AuditLog.open(state)
    os.chmod(key, 0o400)
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(AuditKeyError, match="would orphan"):
        await AuditLog.open(state)
    key.write_bytes(saved)
    os.chmod(key, 0o400)
    await write_log(state, nursery, 1)
    assert verify(state).ok


async def test_one_writer_per_log(state: Path) -> None:
    log = await AuditLog.open(state)
    with pytest.raises(AuditLockedError):
        await AuditLog.open(state)
    await log.aclose()
    again = await AuditLog.open(state)
    await again.aclose()


CRASHING_WRITER = """
import os, sys, trio
from engine.audit import AuditLog, AuditEvent

async def main():
    log = await AuditLog.open(sys.argv[1], checkpoint_every=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        for i in range(3):
            await log.record(AuditEvent(kind="execution", subject="alice", outcome="ok"))
        os._exit(0)  # a crash: no shutdown checkpoint

trio.run(main)
"""


async def test_unclean_stop_leaves_a_warning_not_an_error(state: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        done = await trio.run_process([sys.executable, "-c", CRASHING_WRITER, str(state)], cwd=REPO, check=False)
    assert done.returncode == 0
    report = verify(state)
    assert report.ok and report.records == 3
    assert any("records 3..3 are after the last checkpoint" in w for w in report.warnings)
    await write_log(state, nursery, 1)  # the next start pins what it found
    report = verify(state)
    assert report.ok and report.records == 4
    assert any("before an unclean stop" in w for w in report.warnings)


async def test_queries(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 12)
    assert [r.seq for r in tail(state, 3)] == [10, 11, 12]
    assert {r.subject for r in query(state, subject="bob")} == {"bob"}
    assert [r.seq for r in query(state, tool="shell", outcome="ok")] == [1, 4, 7, 10]
    assert [r.seq for r in query(state, tool="shell", limit=2)] == [7, 10]
    assert len(query(state, since="10m")) == 12
    assert query(state, until="2001-01-01T00:00:00Z") == []
    assert len(query(state, since="2001-01-01", kind="execution")) == 12
    assert query(state, kind="decision") == []
    with pytest.raises(ValueError, match="neither an ISO time"):
        query(state, since="yesterday")


async def test_verify_while_the_writer_runs_sees_no_tampering(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state, checkpoint_every=7, max_batch=8)
    await nursery.start(log.run)
    reports = []
    half_written, go_on = trio.Event(), trio.Event()

    async def writers() -> None:
        # Half, then (once verify has seen the log mid-write) the rest, concurrently with verify.
        for half in (0, 15):
            async with trio.open_nursery() as inner:
                for t in range(10):
                    inner.start_soon(write_records, log, 15, t * 30 + half)
            half_written.set()
            await go_on.wait()

    async with trio.open_nursery() as both:
        both.start_soon(writers)
        await half_written.wait()
        reports.append(await trio.to_thread.run_sync(verify, state))
        go_on.set()
        for _ in range(14):
            reports.append(await trio.to_thread.run_sync(verify, state))
    await log.aclose()
    assert all(r.ok for r in reports), [r.problems for r in reports if not r.ok]
    assert reports[0].records == 150  # ran mid-write, the writer open
    assert verify(state).ok and verify(state).warnings == ()


async def test_a_conflicting_row_fails_the_commit_loudly(state: Path, nursery: trio.Nursery) -> None:
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    records = await write_records(log, 2)
    # Someone appends behind the running writer's back: the writer refuses to adopt it.
    forged = event(7).prepare(digest_key=ANY_KEY).seal(3, records[-1].hash)
    attacker(state).execute(f"INSERT INTO audit_records VALUES ({', '.join('?' * len(forged.row()))})", forged.row())
    with pytest.raises(AuditWriteError, match="could not commit"):
        await log.record(event(8))
    await log.aclose()
    assert verify(state).first_problem.kind == "appended"  # type: ignore[union-attr]


async def test_a_torn_checkpoint_line_is_dropped_at_the_next_start(state: Path, nursery: trio.Nursery) -> None:
    await write_log(state, nursery, 2)
    path = state / "audit-checkpoints.log"
    path.write_bytes(path.read_bytes() + b'{"head_hash":"ab')  # a crash mid-append
    report = verify(state)
    assert report.ok and any("torn line" in w for w in report.warnings)
    await write_log(state, nursery, 1)
    report = verify(state)
    assert report.ok and report.warnings == () and report.checkpoints == 4


async def test_a_key_that_cannot_be_created_is_named(state: Path) -> None:
    default_key_path(state).parent.write_text("a file where the key directory should be")
    with pytest.raises(AuditKeyError, match=r"cannot read the audit head file .*state-keys/audit-head"):
        await AuditLog.open(state)
    default_key_path(state).parent.unlink()
    os.symlink("/proc/self/nonexistent/dir", default_key_path(state).parent)  # a directory that cannot be made
    with pytest.raises(AuditKeyError, match=r"cannot create the audit key .*state-keys/audit-key.*AUDIT_KEY_FILE"):
        await AuditLog.open(state)


async def test_a_key_in_the_state_directory_is_moved_out(state: Path, nursery: trio.Nursery,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """An earlier version's key at <state>/audit-key: moved beside the state directory, same bytes."""
    await write_log(state, nursery, 2)
    key = default_key_path(state)
    old = state / "audit-key"
    old.write_bytes(key.read_bytes())
    os.chmod(old, 0o600)
    key.unlink()
    assert verify(state).ok  # a reader finds it in the old place until then
    await write_log(state, nursery, 1)
    assert not old.exists() and stat.S_IMODE(key.stat().st_mode) == 0o400
    assert "moved the audit key out of the state directory" in caplog.text
    assert verify(state).ok


async def test_secret_values_are_scrubbed_from_details(state: Path, nursery: trio.Nursery) -> None:
    """A validation error that quotes a secret argument does not carry it into the record."""
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    record = await log.record(AuditEvent(
        kind="decision", target="vault", arguments={"pin": "4711-long-one", "n": 12345}, secret={"pin", "n"},
        outcome="invalid_arguments",
        details={"problems": ["pin: '4711-long-one' is too long", "n: 12345 is not a string"], "4711-long-one": 1}))
    await log.aclose()
    problems = ["pin: '[redacted]' is too long", "n: [redacted] is not a string"]
    assert json.loads(record.details) == {"problems": problems, "[redacted]": 1}
    assert b"4711-long-one" not in (state / "audit.db").read_bytes()


async def test_an_old_key_that_cannot_move_keeps_working(state: Path, nursery: trio.Nursery,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade where the key's new directory cannot be created: the old key still serves, loudly."""
    await write_log(state, nursery, 1)
    key = default_key_path(state)
    old = state / "audit-key"
    old.write_bytes(key.read_bytes())
    os.chmod(old, 0o600)
    shutil.rmtree(key.parent)
    os.symlink("/proc/self/nonexistent/dir", key.parent)  # a directory that cannot be made
    await write_log(state, nursery, 1)
    assert old.exists() and "cannot move the audit key out of the state directory" in caplog.text
    assert verify(state).ok


async def test_a_record_waiting_for_room_and_cancelled_records_nothing(state: Path, nursery: trio.Nursery) -> None:
    """Back-pressure: with queue_size=1 and the first record's commit held up (another
    connection holds the write lock), a second record waits for room; cancelled there, it
    is never written, and the first still is once the lock goes."""
    log = await AuditLog.open(state, queue_size=1)
    await nursery.start(log.run)
    blocker = sqlite3.connect(state / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first: list[AuditRecord] = []
    second_scope = trio.CancelScope()
    second: list[AuditRecord] = []

    async def write_first() -> None:
        first.append(await log.record(event(0, subject="first")))

    async def write_second() -> None:
        with second_scope:
            second.append(await log.record(event(1, subject="second")))

    async with trio.open_nursery() as inner:
        inner.start_soon(write_first)
        await trio.testing.wait_all_tasks_blocked()  # the first is the writer's, held up
        inner.start_soon(write_second)
        await trio.testing.wait_all_tasks_blocked()  # the second waits for room
        second_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        blocker.execute("ROLLBACK")
    blocker.close()
    assert second == []
    third = await log.record(event(2, subject="third"))
    await log.aclose()
    assert [r.subject for r in tail(state, 10)] == ["first", "third"]
    assert first[0].seq == 1 and third.seq == 2
    assert verify(state).ok


async def test_a_cancelled_collector_leaves_the_others_answered(state: Path, nursery: trio.Nursery) -> None:
    """The first record() waiting for its answer collects everyone's (the writer thread
    wakes it directly). Cancelled while the commit is held up, it leaves: the records
    waiting behind it are still answered, and its own record is still written."""
    log = await AuditLog.open(state)
    await nursery.start(log.run)
    blocker = sqlite3.connect(state / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first_scope = trio.CancelScope()
    answered: list[AuditRecord] = []

    async def first() -> None:
        with first_scope:
            answered.append(await log.record(event(0, subject="first")))

    async def other(i: int) -> None:
        answered.append(await log.record(event(i, subject="other")))

    with trio.fail_after(30):  # a waiter never woken fails here
        async with trio.open_nursery() as inner:
            inner.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            assert log._collector is not None  # the first waits as the collector
            for i in (1, 2):
                inner.start_soon(other, i)
            await trio.testing.wait_all_tasks_blocked()
            first_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert log._collector is None
            blocker.execute("ROLLBACK")
    blocker.close()
    assert sorted(r.subject or "" for r in answered) == ["other", "other"]
    await log.aclose()
    assert sorted(r.subject or "" for r in tail(state, 10)) == ["first", "other", "other"]
    assert verify(state).ok


async def test_writers_cancelled_at_random_points_never_hang_the_others(state: Path, nursery: trio.Nursery) -> None:
    """30 tasks write 10 records each while a chaos task cancels some of them at random
    scheduling points (collectors and plain waiters alike): every record() that returns
    returned its committed record, none waits forever, and the chain verifies."""
    import random

    rng = random.Random(1234)
    log = await AuditLog.open(state, queue_size=16, max_batch=8)
    await nursery.start(log.run)
    scopes = [trio.CancelScope() for _ in range(30)]
    returned: list[AuditRecord] = []

    async def writer(n: int) -> None:
        with scopes[n]:
            for i in range(10):
                returned.append(await log.record(event(n * 10 + i)))

    async def chaos() -> None:
        for n in rng.sample(range(30), 12):
            for _ in range(rng.randrange(1, 40)):
                await trio.lowlevel.checkpoint()
            scopes[n].cancel()

    with trio.fail_after(60):  # a hang fails here instead of stalling the suite
        async with trio.open_nursery() as inner:
            for n in range(30):
                inner.start_soon(writer, n)
            inner.start_soon(chaos)
    await log.aclose()
    stored = {r.seq: r.hash for r in tail(state, 400)}
    assert all(stored[r.seq] == r.hash for r in returned)
    assert len(returned) <= log.records_written == len(stored)
    assert verify(state).ok


async def test_a_collector_whose_event_is_dropped_when_the_writer_dies_is_told(
        state: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread dies (its periodic checkpoint hits a row someone planted) while
    a record waits as the collector behind the commit it was busy with; with no grace
    left to commit it, that record is failed by the event loop, not by the thread, and
    its waiter is still woken: AuditClosedError, not a wait forever."""
    monkeypatch.setattr("engine.audit._writer.SHUTDOWN_GRACE_S", -1.0)  # no time to commit what is queued
    # One record a commit: the second is never in the first's group, whenever the thread takes it.
    log = await AuditLog.open(state, checkpoint_every=1, max_batch=1)
    crashed: list[BaseException] = []
    writer_ended = trio.Event()

    async def writer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await log.run(task_status=task_status)
        except* sqlite3.IntegrityError as group:
            crashed.extend(group.exceptions)
        finally:
            writer_ended.set()

    await nursery.start(writer)
    planted = attacker(state)
    # The id the first periodic checkpoint will take (the open checkpoint is 1).
    planted.execute("INSERT INTO audit_checkpoints VALUES (2, 0.0, 'x', 0, 'x', 'periodic', 'x', 'x')")
    planted.execute("BEGIN IMMEDIATE")  # holds the first commit up
    first_scope = trio.CancelScope()
    outcome: list[object] = []

    async def first() -> None:
        with first_scope:
            await log.record(event(0))

    async def second() -> None:
        try:
            outcome.append(await log.record(event(1)))
        except AuditClosedError as exc:
            outcome.append(exc)

    with trio.fail_after(30):  # a waiter never woken fails here
        async with trio.open_nursery() as inner:
            inner.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            first_scope.cancel()  # the collector leaves; the second becomes it
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            assert log._collector is not None
            planted.execute("ROLLBACK")
        await writer_ended.wait()
    planted.close()
    assert len(crashed) == 1 and len(outcome) == 1 and isinstance(outcome[0], AuditClosedError)
    await log.aclose()
    assert [r.seq for r in tail(state, 10)] == [1]


async def test_the_writer_leaves_no_descriptor_behind(state: Path, nursery: trio.Nursery) -> None:
    """Its wake-up descriptor (an eventfd) is closed with the log, whoever was waiting."""
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        log = await AuditLog.open(state)
        await nursery.start(log.run)
        await write_records(log, 3)
        with trio.move_on_after(0):
            await log.record(event(9))  # a waiter cancelled at once
        await log.aclose()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("overrides", [
    {},
    {"subject": "zoë 😀", "target": "tab\there \"quoted\" \\ \u2028", "details": {"ключ": ["é", 1e-7, 10**30, None]}},
    {"arguments": {"b": 1.5, "a": {"y": [True, False], "x": "\U0001f600"}, "token": "s3cret"}, "duration_ms": 0.0},
    {"session_id": None, "agent": None, "effect": None, "rule_ids": (), "duration_ms": None, "arguments": None},
    {"duration_ms": 1e22, "details": {"n": -0.0, "big": 2**70, "f": 123456.789}},
])
def test_the_sealed_hash_is_the_digest_of_the_record_body(overrides: dict[str, object]) -> None:
    """The writer seals from the prepared canonical text; verify recomputes from the stored
    row's parsed values: both forms give one hash, whatever the fields hold."""
    record = event(4, **overrides).prepare(digest_key=ANY_KEY).seal(7, "cd" * 32)
    assert record.hash == digest(record.body()) == record.computed_hash()
    assert AuditRecord.from_row(record.row()).computed_hash() == record.hash


def test_an_infinite_duration_is_refused_in_the_caller() -> None:
    with pytest.raises(ValueError, match="finite"):
        event(0, duration_ms=float("inf"))


async def test_the_writer_thread_runs_as_batch_and_is_given_back_as_it_was(state: Path) -> None:
    """SCHED_BATCH while it writes (it does not preempt the event loop that woke it); its
    trio worker thread, which trio reuses, is back to SCHED_OTHER once the writer ends."""
    import os
    import threading

    log = await AuditLog.open(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        assert (await log.record(event(1))).seq == 1
        writers = [t for t in threading.enumerate() if t.name.startswith("_serve_sync")]
        assert len(writers) == 1, [t.name for t in threading.enumerate()]
        tid = writers[0].native_id
        assert tid is not None
        assert os.sched_getscheduler(tid) == os.SCHED_BATCH
        await log.aclose()
    # The thread went back to trio's cache (or ended): never left as SCHED_BATCH.
    try:
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
    except ProcessLookupError:
        pass
