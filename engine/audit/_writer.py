"""The audit writer: one task owns the database; everyone else hands it events.

Usage (the server's root nursery)::

    async with await AuditLog.open(state_dir) as audit:
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run)
            ...
            record = await audit.record(AuditEvent(kind="execution", ...))

Design: :meth:`AuditLog.record` snapshots the event (:meth:`AuditEvent.prepare`), adds
it to the events of this scheduling round and waits until it is committed. A hand-over
task, which runs once the round's tasks have, passes the round's events to the writer
thread as one list (while records come one at a time and the thread waits for work, a
record goes to it at once, a scheduling round sooner). The writer thread (one, for the life of :meth:`AuditLog.run`: a
single ``trio.to_thread`` call that loops) takes whatever has been handed over (up to
``max_batch``), numbers and chains it, commits it in ONE transaction, and wakes the
event loop once for the whole group: under load, many records share one fsync (group
commit), and a lone record is written at once. A record costs the event loop no thread
hop of its own: one hand-over and one wake-up per group. The wake-up goes straight to
a waiting ``record()`` when one has made itself the collector (through an eventfd: it
then answers every group that comes back, see ``_collect_until``), else through trio's
``run_sync_soon``. At most ``queue_size`` records
wait at once; past that ``record()`` waits: back-pressure instead of unbounded memory.

Checkpoints (see ``_checkpoints``) are written when the writer starts (``open``), every
``checkpoint_every`` records or ``checkpoint_interval_s`` seconds after the first
unpinned record (``periodic``, by the monotonic clock), and when it stops (``shutdown``).

Cancellation:
- ``record()``: cancelled before its event is handed over (already cancelled, or waiting
  for room), nothing is recorded; cancelled while waiting for the commit, the record IS
  still written (it may already be). A caller that must not act without a record simply
  doesn't act when ``record()`` did not return.
- ``run()``: on cancellation (or :meth:`aclose`), it stops taking new events; the thread
  commits what is already queued and writes the ``shutdown`` checkpoint, for at most
  ``SHUTDOWN_GRACE_S`` seconds. A commit already running is never interrupted (SQLite
  finishes or rolls back); the time limit only stops further work. Events it could not
  commit in time get :class:`AuditClosedError`.

Errors: a failed commit fails exactly the records of that group with
:class:`AuditWriteError` and the writer carries on. ``record()`` when the writer is gone
raises :class:`AuditClosedError`. Events that JSON cannot hold raise ``ValueError`` /
``TypeError`` in the caller.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import math
import os
import queue
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import attrs
import trio

from ..canonical import canonical_json
from ..sqlite import transaction
from ._adopt import check_adoptable, refusal
from ._checkpoints import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_LOG_NAME,
    GENESIS_MAC,
    Checkpoint,
    checkpoint_line,
    head_path,
    read_checkpoint_file,
    read_head,
    sign,
    write_head,
)
from ._db import audit_db_path, connect_writer
from ._errors import AuditClosedError, AuditError, AuditKeyError, AuditLockedError, AuditWriteError
from ._keys import derive, load_or_create_key
from ._query import query, tail
from ._record import COLUMNS, GENESIS_HASH, AuditEvent, AuditRecord, Prepared, iso_time

__all__ = ["AuditLog", "SHUTDOWN_GRACE_S"]

log = logging.getLogger(__name__)
#: One line per checkpoint, for shipping them off the host (journald, a log shipper).
checkpoint_log = logging.getLogger("engine.audit.checkpoint")

#: How long the writer may spend, shielded, committing what is queued at shutdown.
SHUTDOWN_GRACE_S: Final = 5.0
_INSERT_RECORD: Final = f"INSERT INTO audit_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_INSERT_CHECKPOINT: Final = (f"INSERT INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(CHECKPOINT_COLUMNS))})")


#: Put on the queue once, when the writer is to stop: everything before it is committed.
_STOP: Final = object()


@attrs.define(eq=False)
class _Pending:
    """One queued event and the slot its waiter reads once ``done``.

    The waiter parks itself (:meth:`wait`) and the answer reschedules it directly: a
    ``trio.Event`` would cost a parking lot and its bookkeeping for every record."""

    prepared: Prepared
    done: bool = False
    record: AuditRecord | None = None
    error: str | None = None  # a message: each waiter raises its own exception object
    error_type: type[AuditError] = AuditWriteError
    _waiter: trio.lowlevel.Task | None = None
    # Set while its task is the collector, waiting on this descriptor (AuditLog._collect_until).
    collector_fd: int | None = None

    async def wait(self) -> None:
        """Until answered; cancellable (the answer then wakes nobody)."""
        if not self.done:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        self.done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)
        elif self.collector_fd is not None:
            # Answered by someone else (a stale run_sync_soon, or shutdown failing it)
            # while its task waits as the collector: poke the descriptor it waits on.
            os.eventfd_write(self.collector_fd, 1)

    def resolve(self, record: AuditRecord) -> None:
        self.record = record
        self._wake()

    def fail(self, message: str, error_type: type[AuditError] = AuditWriteError) -> None:
        if not self.done:
            self.error, self.error_type = message, error_type
            self._wake()


@attrs.define(eq=False)
class AuditLog:
    """The append-only, hash-chained audit log of one state directory.

    Create with ``await AuditLog.open(state_dir)``; run :meth:`run` as a task; call
    :meth:`record` from any task. Close with :meth:`aclose` or ``async with``.
    """

    state_dir: Path
    path: Path
    key_path: Path
    checkpoint_every: int
    checkpoint_interval_s: float
    max_batch: int
    _conn: sqlite3.Connection | None = attrs.field(repr=False)
    _key: bytes = attrs.field(repr=False)
    _digest_key: bytes = attrs.field(repr=False)  # derived: keys the arguments' digest
    _checkpoint_fd: int = attrs.field(repr=False)  # the checkpoint log, O_APPEND, flock'd
    _head_seq: int
    _head_hash: str
    _last_checkpoint: Checkpoint | None
    queue_size: int = 256
    # Events of this scheduling round, handed to the thread together by _hand_over (one wake-up).
    _waiting: list[_Pending] = attrs.field(factory=list, repr=False)
    _hand_task: trio.lowlevel.Task | None = attrs.field(default=None, repr=False)  # _hand_over, while parked
    # Set by the writer thread while it waits for work, cleared when it takes some (or
    # record() hands it an event directly): a hint, either way it is wrong costs nothing.
    _writer_idle: bool = attrs.field(default=False, repr=False)
    _lone: bool = attrs.field(default=True, repr=False)  # the last group answered held one record
    # Lists of events handed to the writer thread (and _STOP); filled and drained from both sides.
    _queue: queue.SimpleQueue[Any] = attrs.field(factory=queue.SimpleQueue, repr=False)
    _carry: list[_Pending] = attrs.field(factory=list, repr=False)  # the thread's: taken, not yet in a group
    _outstanding: int = 0  # recorded and not yet answered (bounded by queue_size)
    _room: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, repr=False)
    _token: trio.lowlevel.TrioToken | None = attrs.field(default=None, repr=False)
    # Answers from the writer thread: (group, records or None, error or None), appended there
    # and taken here, by _collect. The thread then wakes the collector (a record() waiting for
    # its answer, on _wake_fd, an eventfd) if there is one, else the loop (run_sync_soon).
    _answers: collections.deque[tuple[list[_Pending], list[AuditRecord] | None, str | None]] = attrs.field(
        factory=collections.deque, repr=False)
    _wake_fd: int = attrs.field(default=-1, repr=False)  # while the writer runs (and its collector leaves)
    _collector: _Pending | None = attrs.field(default=None, repr=False)
    _closing: bool = False  # _STOP was queued (or the writer ended): record() refuses
    # Checkpoints already in the file whose table insert failed; inserted with the next.
    _table_backlog: list[Checkpoint] = attrs.field(factory=list, repr=False)
    _head_file_failed: bool = False  # warned once that the head file cannot be written
    _since_checkpoint: int = 0  # records committed after the last checkpoint
    _checkpoint_deadline: float = math.inf  # monotonic clock; set by the first such record
    _state: str = "ready"  # ready -> running -> stopped -> closed (or ready -> closed)
    _stopped: trio.Event = attrs.field(factory=trio.Event, repr=False)
    #: Transactions that wrote records, and records written, since open (for tests, bench).
    commits: int = 0
    records_written: int = 0

    @classmethod
    async def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        queue_size: int = 256,
        max_batch: int = 256,
        key_file: str | os.PathLike[str] | None = None,
    ) -> AuditLog:
        """Open (creating if needed) ``<state_dir>/audit.db``, its checkpoint log and key.

        ``key_file`` overrides ``$SCONNECT_AUDIT_KEY_FILE`` and ``<state>-keys/audit-key``
        (``_keys``). The key is created (32 random bytes, 0400) only for a log with no
        checkpoints and no head file. Raises :class:`AuditLockedError` when another
        writer has the log open, :class:`AuditAdoptionError` for a log the key does not
        vouch for (``_adopt``), :class:`AuditKeyError` for a missing (with checkpoints),
        malformed, group/world-accessible or uncreatable key, :class:`AuditError` for an
        unusable database.
        """
        if checkpoint_every < 1 or not checkpoint_interval_s > 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_interval_s > 0")
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be >= 1")
        state = Path(state_dir)
        opened = await trio.to_thread.run_sync(_open_files, state, key_file)
        log.info("audit log %s: %d records, key %s, head file %s", audit_db_path(state), opened.head_seq,
                 opened.key_path, head_path(state))
        return cls(
            state_dir=state, path=audit_db_path(state), key_path=opened.key_path, checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s, max_batch=max_batch, conn=opened.conn, key=opened.key,
            digest_key=derive(opened.key, "arguments"), checkpoint_fd=opened.fd, queue_size=queue_size,
            head_seq=opened.head_seq, head_hash=opened.head_hash, last_checkpoint=opened.last,
        )

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last committed record (``(0, GENESIS_HASH)`` when empty)."""
        return self._head_seq, self._head_hash

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self._last_checkpoint

    @property
    def digest_key(self) -> bytes:
        """The key (derived from the audit key, never stored) that keys the digest of an
        action's arguments: for the state database's pending actions, so that their
        digests, like the audit log's, reveal nothing about secret arguments."""
        return self._digest_key

    # --- the producers' side (the event loop) ----------------------------------------

    @property
    def running(self) -> bool:
        """Whether the writer task is taking records (for readiness checks)."""
        return self._state == "running"

    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` and return its record once it is committed (durable).

        Raises :class:`AuditClosedError` if the writer is gone or stops before taking
        the event, :class:`AuditWriteError` if its commit failed, ``ValueError`` /
        ``TypeError`` for arguments or details that JSON cannot hold. See the module
        docstring for cancellation.
        """
        pending = _Pending(event.prepare(digest_key=self._digest_key))
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closing or self._state in ("stopped", "closed"):
                raise AuditClosedError("the audit writer has stopped; nothing was recorded")
            if self._outstanding < self.queue_size:
                break
            await self._room.park()
        # From here on the event is the writer's: it is committed, or failed, whatever
        # happens to this task (a cancellation only stops the wait below).
        self._outstanding += 1
        if self._writer_idle and self._lone and not self._waiting:
            # Records come one at a time (the last group held one), the thread waits for
            # work and nothing is ahead of this event: hand it over now rather than at the
            # end of the round (one scheduling round less). Under load the round's records
            # go together (handing the first over alone would cost the others a commit).
            self._writer_idle = False
            self._queue.put([pending])
        else:
            self._waiting.append(pending)
            if len(self._waiting) == 1 and self._hand_task is not None:
                trio.lowlevel.reschedule(self._hand_task)
                self._hand_task = None
        if self._collector is None and self._wake_fd >= 0:
            await self._collect_until(pending)
        else:
            await pending.wait()
        if pending.error is not None:
            raise pending.error_type(pending.error)
        assert pending.record is not None
        return pending.record

    async def _collect_until(self, pending: _Pending) -> None:
        """Wait for ``pending``'s answer as the collector: the writer thread wakes this task
        itself (through ``_wake_fd``), and it answers every group that has come back, its
        own and others'. A lone record so costs the event loop one wake-up and one
        scheduling round less than an answer through ``run_sync_soon`` (trio's own wake-up
        descriptor, its system task, then this task). Once this task leaves (answered or
        cancelled), answers go through ``run_sync_soon`` again until the next collector.

        The thread appends an answer, then reads ``_collector``; this side sets or clears
        ``_collector``, then takes the answers: whichever order they interleave in, each
        answer is taken here, or has the collector woken, or goes through run_sync_soon."""
        fd = self._wake_fd
        self._collector = pending
        try:
            while True:
                answered = self._collect()
                if pending.done:
                    break
                pending.collector_fd = fd
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    pending.collector_fd = None
                with contextlib.suppress(BlockingIOError):  # already read by a previous round
                    os.eventfd_read(fd)
        finally:
            self._collector = None
            self._collect()
            if self._state != "running":
                self._close_wake_fd()
        if answered > 1:
            # Others were answered with it: go on in the same round as they do, so that
            # the records they all make next are handed over together (one group).
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _collect(self) -> int:
        """Answer the groups the writer thread has committed (or failed), in order; how
        many records that answered."""
        answered = 0
        while self._answers:
            batch, records, error = self._answers.popleft()
            self._answered(batch, records, error)
            answered += len(batch)
        return answered

    def _post(self, batch: list[_Pending], records: list[AuditRecord] | None, error: str | None) -> None:
        """In the writer thread: hand a group's answer to the event loop (one wake-up)."""
        assert self._token is not None
        self._answers.append((batch, records, error))
        if self._collector is not None:
            os.eventfd_write(self._wake_fd, 1)
        else:
            self._token.run_sync_soon(self._collect)

    def _close_wake_fd(self) -> None:
        # Once the writer has stopped and no collector waits on it.
        if self._wake_fd >= 0 and self._collector is None:
            fd, self._wake_fd = self._wake_fd, -1
            os.close(fd)

    def _answered(self, batch: list[_Pending], records: list[AuditRecord] | None, error: str | None) -> None:
        """In the event loop, once per group: wake its waiters and whoever waits for room."""
        self._lone = len(batch) == 1
        if records is not None:
            for pending, record in zip(batch, records, strict=True):
                pending.resolve(record)
        else:
            for pending in batch:
                pending.fail(f"the audit log could not commit this record: {error}")
        self._outstanding -= len(batch)
        if self._room:
            self._room.unpark(count=len(batch))

    def _stop_taking(self) -> None:
        """Refuse new events from now on; the writer thread stops after those queued."""
        if not self._closing:
            self._closing = True
            self._hand_waiting()
            self._queue.put(_STOP)

    def _hand_waiting(self) -> None:
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            self._queue.put(waiting)

    async def _hand_over(self) -> None:
        """Hand the events recorded in one scheduling round to the thread at once: the
        round's tasks have run by the time this task does, so concurrent records share a
        wake-up of the thread and a commit, instead of the first one waking it alone."""
        while True:
            self._hand_waiting()
            self._hand_task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._hand_over_cancelled)

    def _hand_over_cancelled(self, _: Any) -> trio.lowlevel.Abort:
        self._hand_task = None
        return trio.lowlevel.Abort.SUCCEEDED

    # --- the writer ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task. Reports started once the ``open`` checkpoint is written;
        returns after :meth:`aclose`, or ends on cancellation after draining (module
        docstring). May run once per opened log."""
        if self._state != "ready":
            raise AuditError(f"the audit writer cannot start: it is {self._state}")
        self._state = "running"
        self._token = trio.lowlevel.current_trio_token()
        if hasattr(os, "eventfd"):  # Linux; elsewhere every answer goes through run_sync_soon
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        drained = False
        try:
            await trio.to_thread.run_sync(self._checkpoint_sync, "open")
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_when_cancelled)
                nursery.start_soon(self._hand_over)
                # Not abandon_on_cancel: the thread commits and stops on _STOP (queued by
                # _stop_when_cancelled or aclose), so the head in memory matches the database.
                # A limiter of its own: the thread lives as long as the writer, and must not hold
                # one of the tokens that every other blocking call of the process shares.
                await trio.to_thread.run_sync(self._serve_sync, limiter=trio.CapacityLimiter(1))
                drained = True
                nursery.cancel_scope.cancel()
        finally:
            self._stop_taking()
            if not drained:
                # The thread ended early (a checkpoint failed) or never started: commit
                # what is queued, bounded like any shutdown.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._drain_sync)
            self._collect()  # what was committed is answered as committed
            self._fail_everything_left("the audit writer stopped before committing this event")
            self._state = "stopped"
            self._close_wake_fd()
            self._stopped.set()

    async def _stop_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._stop_taking()

    def _fail_everything_left(self, message: str) -> None:
        # Called when the writer thread is done (or never ran): its carry-over is ours now.
        left, self._waiting, self._carry = [*self._carry, *self._waiting], [], []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left.extend(item)
        for pending in left:
            pending.fail(message, AuditClosedError)
        self._outstanding -= len(left)
        self._room.unpark_all()

    # --- synchronous work, in the writer thread ----------------------------------------

    @staticmethod
    def _now() -> float:
        """The clock of periodic checkpoints (the writer thread has no trio clock)."""
        return time.monotonic()

    def _serve_sync(self) -> None:
        """The writer thread: commit groups until _STOP, then drain and sign off."""
        with _no_wakeup_preemption():
            self._commit_until_stopped()

    def _commit_until_stopped(self) -> None:
        while True:
            timeout = None if self._since_checkpoint == 0 else max(0.0, self._checkpoint_deadline - self._now())
            group, stop = self._next_group(timeout)
            if group:
                self._commit_group(group)
            if stop:
                break
            if self._checkpoint_due():
                self._checkpoint_sync("periodic")
        self._drain_sync()

    def _next_group(self, timeout: float | None) -> tuple[list[_Pending], bool]:
        """Up to ``max_batch`` events: what was left over, else the next hand-over (waiting
        up to ``timeout``, None: as long as it takes), and whatever else is already queued;
        and whether _STOP came."""
        group, self._carry = self._carry, []
        stop = False
        if not group:
            self._writer_idle = True
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return [], False
            finally:
                self._writer_idle = False
            if item is _STOP:
                return [], True
            group = list(item)
        while len(group) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            group.extend(item)
        if len(group) > self.max_batch:
            group, self._carry = group[:self.max_batch], group[self.max_batch:]
        return group, stop

    def _commit_group(self, batch: list[_Pending]) -> None:
        """Commit one group and hand the answers to the event loop (one wake-up)."""
        try:
            records = self._commit_sync([p.prepared for p in batch])
        except Exception as exc:  # noqa: BLE001 - answered to every waiter, logged; the writer goes on
            # sqlite3/OS errors (disk full, a conflicting row) — or a bug: either way the
            # group was rolled back and the head is unchanged, so later groups can proceed.
            log.error("audit writer: commit of %d records failed: %s", len(batch), exc,
                      exc_info=not isinstance(exc, sqlite3.Error | OSError))
            self._post(batch, None, str(exc))
            return
        if self._since_checkpoint == 0:
            self._checkpoint_deadline = self._now() + self.checkpoint_interval_s
        self._since_checkpoint += len(records)
        self._post(batch, records, None)

    def _drain_sync(self) -> None:
        """Commit what is queued (up to _STOP), then write the ``shutdown`` checkpoint;
        all within SHUTDOWN_GRACE_S. What is left is failed by the event loop."""
        deadline = self._now() + SHUTDOWN_GRACE_S
        while True:
            if self._now() > deadline:
                log.error("audit writer: shutdown took longer than %ss; queued events dropped", SHUTDOWN_GRACE_S)
                return
            group, _stop = self._next_group(0)
            if not group:
                break
            self._commit_group(group)
        try:
            self._checkpoint_sync("shutdown")
        except (sqlite3.Error, OSError, AuditError) as exc:
            log.error("audit writer: the shutdown checkpoint failed: %s", exc)

    def _checkpoint_due(self) -> bool:
        return self._since_checkpoint >= self.checkpoint_every or (
            self._since_checkpoint > 0 and self._now() >= self._checkpoint_deadline)

    def _commit_sync(self, batch: list[Prepared]) -> list[AuditRecord]:
        conn = self._require_conn()
        seq, prev = self._head_seq, self._head_hash
        records = []
        for prepared in batch:
            seq += 1
            record = prepared.seal(seq, prev)
            records.append(record)
            prev = record.hash
        if len(records) == 1:
            # One statement is a transaction of its own (autocommit): one call into SQLite,
            # one release and retake of the GIL, instead of three.
            conn.execute(_INSERT_RECORD, records[0].row())
        else:
            with transaction(conn):
                conn.executemany(_INSERT_RECORD, [r.row() for r in records])
        self._head_seq, self._head_hash = seq, prev
        self.commits += 1
        self.records_written += len(records)
        return records

    def _checkpoint_sync(self, reason: str) -> Checkpoint:
        conn = self._require_conn()
        last = self._last_checkpoint
        at = round(time.time(), 6)
        checkpoint = sign(self._key, id=1 if last is None else last.id + 1, time=at,
                          time_iso=iso_time(at), seq=self._head_seq, head_hash=self._head_hash,
                          reason=reason, prev_mac=GENESIS_MAC if last is None else last.mac)
        # The file first: it is the copy the table cannot be ahead of (module docstring
        # of _checkpoints). Once it is there, the checkpoint exists.
        _write_all(self._checkpoint_fd, checkpoint_line(checkpoint))
        os.fsync(self._checkpoint_fd)
        self._last_checkpoint = checkpoint
        self._since_checkpoint = 0
        self._checkpoint_deadline = math.inf
        self._table_backlog.append(checkpoint)
        checkpoint_log.info("%s", canonical_json(checkpoint.to_dict()),
                            extra={"audit_checkpoint": checkpoint.to_dict()})
        with transaction(conn):
            conn.executemany(_INSERT_CHECKPOINT, [c.row() for c in self._table_backlog])
        self._table_backlog.clear()
        try:
            write_head(head_path(self.state_dir), checkpoint)
        except OSError as exc:
            if not self._head_file_failed:
                log.warning("audit: cannot write the head file %s (%s): a deleted or replaced log will "
                            "only show in the checkpoints shipped off the host", head_path(self.state_dir), exc)
            self._head_file_failed = True
        return checkpoint

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditClosedError(f"{self.path}: the audit log is closed")
        return self._conn

    # --- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the writer gracefully (it commits what is queued and writes the
        ``shutdown`` checkpoint), wait for it, then close the files. Idempotent."""
        if self._state == "closed":
            return
        self._stop_taking()
        if self._state == "running":
            await self._stopped.wait()
        else:
            self._fail_everything_left("the audit log was closed before its writer ran")
        self._state = "closed"
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)
            os.close(self._checkpoint_fd)  # releases the writer's lock too

    async def __aenter__(self) -> AuditLog:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        with trio.move_on_after(SHUTDOWN_GRACE_S + 1, shield=True):
            await self.aclose()

    # --- reading (its own connection, in a thread) -----------------------------------

    async def tail(self, n: int = 20) -> list[AuditRecord]:
        """The last ``n`` records, oldest first. See :func:`engine.audit.tail`."""
        return await trio.to_thread.run_sync(lambda: tail(self.state_dir, n))

    async def query(self, **filters: Any) -> list[AuditRecord]:
        """Records matching ``filters``. See :func:`engine.audit.query`."""
        return await trio.to_thread.run_sync(lambda: query(self.state_dir, **filters))


@contextlib.contextmanager
def _no_wakeup_preemption() -> Iterator[None]:
    """Run this thread as SCHED_BATCH for the block (then back to SCHED_OTHER: trio
    reuses its threads). Handed a record, the writer then waits for a free core rather
    than preempting the event loop that woke it, which would only have to wait for the
    writer to let go of the interpreter lock before it could go on: on a busy machine
    the loop and the writer fought for the lock once or more per record. Unprivileged;
    where the policy cannot be set, nothing changes."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@attrs.frozen
class _Opened:
    conn: sqlite3.Connection
    key: bytes
    key_path: Path
    fd: int
    head_seq: int
    head_hash: str
    last: Checkpoint | None


def _open_files(state_dir: Path, key_file: str | os.PathLike[str] | None) -> _Opened:
    """Lock, open and reconcile the log's files (in a worker thread)."""
    if not state_dir.is_dir():
        state_dir.mkdir(parents=True, mode=0o700)
    fd = os.open(state_dir / CHECKPOINT_LOG_NAME, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AuditLockedError(
                    f"{state_dir}: another process is writing this audit log (a server running on this state "
                    "directory, or one still shutting down: it lets running work finish first)") from None
            raise
        conn = connect_writer(audit_db_path(state_dir))
        try:
            return _reconcile(conn, fd, state_dir, key_file)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        os.close(fd)
        raise


def _reconcile(conn: sqlite3.Connection, fd: int, state_dir: Path,
               key_file: str | os.PathLike[str] | None) -> _Opened:
    file = read_checkpoint_file(state_dir / CHECKPOINT_LOG_NAME)
    table = [Checkpoint.from_mapping(dict(zip(CHECKPOINT_COLUMNS, row, strict=True)))
             for row in conn.execute(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints "
                                     "ORDER BY id")]
    row = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
    head_seq, head_hash = (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))
    try:
        head = read_head(head_path(state_dir))
    except ValueError as exc:
        raise refusal(state_dir, str(exc)) from None
    except OSError as exc:
        raise AuditKeyError(f"cannot read the audit head file {head_path(state_dir)}: {exc.strerror}; its directory "
                            f"{head_path(state_dir).parent} is where the audit key lives by default") from None
    if head_seq and not table and not file.checkpoints:
        # Before the key is touched: a key created now would sign what someone else wrote.
        raise refusal(state_dir, f"it holds {head_seq} records but no checkpoint at all: they were not "
                      "written by this service (or both copies of its checkpoints were deleted)")
    may_create = not table and not file.checkpoints and head is None
    path, key = load_or_create_key(state_dir, key_file, may_create=may_create)
    if file.torn_tail:
        # A line cut short by a crash mid-write: never signed into the table, drop it so
        # the next line starts clean.
        size = os.lseek(fd, 0, os.SEEK_END)
        data = os.pread(fd, size, 0)
        os.ftruncate(fd, data.rfind(b"\n") + 1)
        log.warning("audit: dropped a torn last line of %s", CHECKPOINT_LOG_NAME)
    # A crash between the file append and the table insert leaves the file one (or, after
    # failed inserts, a few) checkpoints ahead: copy them, but only genuine ones that
    # continue the table's chain. Anything else is left for verify to report.
    last = table[-1] if table else None
    missing = []
    for checkpoint in file.checkpoints:
        if last is not None and checkpoint.id <= last.id:
            continue
        expected_prev = GENESIS_MAC if last is None else last.mac
        if checkpoint.id != (1 if last is None else last.id + 1) or checkpoint.prev_mac != expected_prev \
                or not checkpoint.mac_ok(key):
            break
        missing.append(checkpoint)
        last = checkpoint
    check_adoptable(conn, state_dir, key, table + missing, head, head_seq)
    if missing:
        with transaction(conn):
            conn.executemany(_INSERT_CHECKPOINT, [c.row() for c in missing])
    elif table and not file.checkpoints:
        # Not repaired: the file was deleted (or emptied). The table still vouches for the
        # records; the file restarts at the next checkpoint and verify reports the loss.
        log.error("audit: %s is missing or empty while the table holds %d checkpoints: it was deleted. "
                  "The table's copy still vouches for the log; run `sconnect audit verify`",
                  CHECKPOINT_LOG_NAME, len(table))
    elif table and file.checkpoints and file.checkpoints[-1].id < table[-1].id:
        # Not repaired: the file losing lines is tamper evidence, for verify to report.
        log.warning("audit: %s lacks checkpoints the table has; run `sconnect audit verify`",
                    CHECKPOINT_LOG_NAME)
    return _Opened(conn=conn, key=key, key_path=path, fd=fd, head_seq=head_seq, head_hash=head_hash, last=last)
