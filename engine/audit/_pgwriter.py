"""The audit writer on PostgreSQL: every instance appends to one shared hash chain.

:class:`PgAuditLog` is an :class:`~engine.audit.AuditLog` (same queue, same group
commits, same ``record()`` contract and cancellation rules) whose commits and checkpoints
go to the shared database instead of ``<state>/audit.db``:

- a commit takes the head row under ``SELECT ... FOR UPDATE``, checks that the key signs
  it and that nothing lies past it (``_shared``), seals the group on top of it, inserts
  it and signs the new head — one transaction, so two instances never fork the chain;
- a checkpoint takes the same lock, so checkpoint ids chain across instances too, and
  pins the shared head. Each instance signs its own ``open``, ``periodic`` and
  ``shutdown`` checkpoints with the shared key; the one it signed last is kept in this
  host's head file (``<state>-keys/audit-head-pg-<database>``) and logged on the
  ``engine.audit.checkpoint`` logger, as with SQLite.

The key: every instance on one database needs the same key file (the operator copies it:
``SCONNECT_AUDIT_KEY_FILE``); the first writer of a fresh database creates it (where
none is configured: ``<state>-keys/audit-key``) and records its fingerprint, and an
instance holding another key is refused at start.

Errors: :class:`AuditError` at open when the database cannot be reached or was migrated
by a newer program (the message names the server, never the password);
:class:`AuditKeyError` for a missing or different key; :class:`AuditAdoptionError` for a
shared log the key does not vouch for. While serving, a commit that fails (the database
went away, a head someone altered) fails that group's records with
:class:`AuditWriteError` and the writer carries on; a periodic checkpoint that fails is
retried later; the writer never stops for a database outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from ..canonical import canonical_json
from ..pg import Database, PgError, PgUnavailableError, SchemaTooNewError, describe, migrate
from ._adopt import check_tail
from ._checkpoints import GENESIS_MAC, Checkpoint, read_head, sign, write_head
from ._errors import AuditError, AuditKeyError, AuditWriteError
from ._keys import derive, load_or_create_key
from ._pgdb import (
    COMPONENT,
    INSERT_CHECKPOINT,
    INSERT_RECORD,
    MIGRATIONS,
    checkpoints,
    last_checkpoint,
    last_seq,
    lock_head,
    records_from,
    set_head,
)
from ._pgverify import verify_shared
from ._query import query_rows, tail_rows
from ._record import AuditRecord, Prepared, iso_time
from ._shared import SharedHead, check_at_start, check_head, head_file_for, key_id, shared_refusal, sign_head
from ._verify import VerifyReport
from ._writer import AuditLog, checkpoint_log

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgAuditLog"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: After a periodic checkpoint failed (the database is away), how long until the next try.
CHECKPOINT_RETRY_S: Final = 5.0
#: The writer commits one group at a time; a second connection serves tail/query.
POOL_SIZE: Final = 2


@attrs.frozen
class _Joined:
    key: bytes
    key_path: Path
    head: SharedHead
    last: Checkpoint | None


@attrs.define(eq=False)
class PgAuditLog(AuditLog):
    """The shared audit log in a PostgreSQL database (module docstring). Create with
    ``await PgAuditLog.connect(state_dir, url)``; then as :class:`AuditLog`."""

    _db: Database | None = attrs.field(default=None, repr=False)
    #: The database, for messages: ``user@host:port/db`` (never the password).
    database: str = ""
    _head_file: Path | None = None
    _periodic_failed: bool = False
    #: Whether the last call reached the database (False after one could not, True again
    #: after the next that did, or :meth:`ping`): for readiness checks.
    available: bool = True

    @classmethod
    async def connect(
        cls,
        state_dir: str | Path,
        url: str,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        queue_size: int = 256,
        max_batch: int = 256,
        key_file: str | Path | None = None,
    ) -> PgAuditLog:
        """Connect, migrate the ``audit`` schema (under an advisory lock) and join the
        shared log: the key must be the one it is signed with, and the key must vouch
        for it (``_shared``). Errors: module docstring."""
        if checkpoint_every < 1 or not checkpoint_interval_s > 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_interval_s > 0")
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be >= 1")
        state = Path(state_dir)
        where = describe(url)
        try:
            db = await Database.open(url, max_size=POOL_SIZE, application="sconnect-audit")
        except PgError as exc:
            raise AuditError(str(exc)) from None
        try:
            try:
                await db.run(migrate, COMPONENT, MIGRATIONS)
                joined = await db.run(_join, state, key_file, where)
            except (SchemaTooNewError, PgError) as exc:
                raise AuditError(str(exc)) from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await db.aclose()
            raise
        log.info("audit log %s (shared): %d records, key %s, head file %s", where, joined.head.seq,
                 joined.key_path, head_file_for(state, where))
        return cls(
            state_dir=state, path=Path(where), key_path=joined.key_path, checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s, max_batch=max_batch, conn=None, key=joined.key,
            digest_key=derive(joined.key, "arguments"), checkpoint_fd=-1, queue_size=queue_size,
            head_seq=joined.head.seq, head_hash=joined.head.hash, last_checkpoint=joined.last,
            db=db, database=where, head_file=head_file_for(state, where),
        )

    # --- the writer's synchronous steps (worker thread), on the shared database ------

    def _call(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        import psycopg

        db = self._db
        if db is None:
            raise AuditWriteError(f"{self.database}: the audit log is closed")
        try:
            result = db.run_blocking(fn)
        except PgUnavailableError as exc:
            self.available = False
            raise AuditWriteError(str(exc)) from None
        except PgError as exc:
            raise AuditWriteError(str(exc)) from None
        except psycopg.Error as exc:
            # statement_timeout, a conflicting row...: the transaction rolled back.
            raise AuditWriteError(f"{self.database}: {type(exc).__name__}: {str(exc).strip()}") from None
        self.available = True
        return result

    def _commit_sync(self, batch: list[Prepared]) -> list[AuditRecord]:
        key, refuse = self._key, partial(shared_refusal, self.database)

        def work(conn: psycopg.Connection[Any]) -> list[AuditRecord]:
            with conn.transaction():
                head = lock_head(conn)
                check_head(refuse, key, head, last_seq(conn))
                seq, prev = head.seq, head.hash
                records = []
                for prepared in batch:
                    seq += 1
                    record = prepared.seal(seq, prev)
                    records.append(record)
                    prev = record.hash
                with conn.cursor() as cursor:
                    cursor.executemany(INSERT_RECORD, [r.row() for r in records])
                set_head(conn, seq, prev, sign_head(key, seq, prev))
            return records

        records = self._call(work)
        self._head_seq, self._head_hash = records[-1].seq, records[-1].hash
        self.commits += 1
        self.records_written += len(records)
        return records

    def _checkpoint_sync(self, reason: str) -> Checkpoint | None:  # type: ignore[override]
        key, refuse = self._key, partial(shared_refusal, self.database)

        def work(conn: psycopg.Connection[Any]) -> tuple[Checkpoint, SharedHead]:
            with conn.transaction():
                head = lock_head(conn)
                check_head(refuse, key, head, last_seq(conn))
                last = last_checkpoint(conn)
                at = round(time.time(), 6)
                checkpoint = sign(key, id=1 if last is None else last.id + 1, time=at, time_iso=iso_time(at),
                                  seq=head.seq, head_hash=head.hash, reason=reason,
                                  prev_mac=GENESIS_MAC if last is None else last.mac)
                conn.execute(INSERT_CHECKPOINT, checkpoint.row())
            return checkpoint, head

        try:
            checkpoint, head = self._call(work)
        except AuditError as exc:
            if reason != "periodic":
                raise
            log.warning("audit writer: the periodic checkpoint failed (retried in %gs): %s", CHECKPOINT_RETRY_S, exc)
            self._periodic_failed = True
            return None
        self._head_seq, self._head_hash = head.seq, head.hash
        self._last_checkpoint = checkpoint
        self._since_checkpoint = 0
        self._checkpoint_deadline = math.inf
        checkpoint_log.info("%s", canonical_json(checkpoint.to_dict()),
                            extra={"audit_checkpoint": checkpoint.to_dict()})
        assert self._head_file is not None
        try:
            write_head(self._head_file, checkpoint)
        except OSError as exc:
            if not self._head_file_failed:
                log.warning("audit: cannot write the head file %s (%s): a shared log cut back or replaced will "
                            "only show in the checkpoints shipped off the host", self._head_file, exc)
            self._head_file_failed = True
        return checkpoint

    def _checkpoint_due(self) -> bool:
        if self._periodic_failed:
            # Not at once again (the loop would spin while the database is away): later.
            self._periodic_failed = False
            self._checkpoint_deadline = self._now() + CHECKPOINT_RETRY_S
            return False
        return super()._checkpoint_due()

    # --- closing and reading ---------------------------------------------------------

    async def aclose(self) -> None:
        """As :meth:`AuditLog.aclose`, then the connection pool."""
        await super().aclose()
        db, self._db = self._db, None
        if db is not None:
            await db.aclose()

    async def ping(self) -> None:
        """One round trip to the database, updating :attr:`available` (never raises for
        an unreachable database: that is what the flag says)."""
        db = self._db
        if db is None:
            return
        try:
            await db.run(lambda conn: conn.execute("SELECT 1").fetchone())
        except PgUnavailableError:
            self.available = False
        else:
            self.available = True

    def verify_sync(self) -> VerifyReport:
        """:func:`verify_shared` of this log, with this instance's key and head file (blocking)."""
        db = self._db
        if db is None:
            raise AuditError(f"{self.database}: the audit log is closed")
        return verify_shared(db.url, state_dir=self.state_dir, key_file=self.key_path)

    async def tail(self, n: int = 20) -> list[AuditRecord]:
        return await self._read(lambda conn: tail_rows(_executor(conn), n))

    async def query(self, **filters: Any) -> list[AuditRecord]:
        return await self._read(lambda conn: query_rows(_executor(conn), **filters))

    async def _read(self, fn: Callable[[psycopg.Connection[Any]], list[AuditRecord]]) -> list[AuditRecord]:
        db = self._db
        if db is None:
            raise AuditError(f"{self.database}: the audit log is closed")
        try:
            return await db.run(fn)
        except PgError as exc:
            raise AuditError(str(exc)) from None


def _executor(conn: psycopg.Connection[Any]) -> Callable[[str, list[Any]], list[Any]]:
    """Run the readers' SQL (``?`` placeholders, which no statement holds otherwise) on PostgreSQL."""
    return lambda sql, params: conn.execute(sql.replace("?", "%s").encode(), params).fetchall()


def _join(conn: psycopg.Connection[Any], state: Path, key_file: str | Path | None, where: str) -> _Joined:
    """Join the shared log at start (``_shared``), under the head lock."""
    refuse = partial(shared_refusal, where)
    with conn.transaction():
        head = lock_head(conn)
        top = last_seq(conn)
        try:
            found = checkpoints(conn)
        except ValueError as exc:
            raise refuse(f"a checkpoint row is malformed: {exc}") from None
        fresh = head.key_id is None and not found and top == 0 and head.seq == 0
        try:
            path, key = load_or_create_key(state, key_file, may_create=fresh)
        except AuditKeyError as exc:
            if fresh or "is missing" not in str(exc):
                raise
            raise AuditKeyError(
                f"{exc}. The shared audit log in {where} is signed with key id {head.key_id}: every instance on one "
                "database needs the same key file; copy it from an instance already serving this database "
                "(0400) and point SCONNECT_AUDIT_KEY_FILE at it") from None
        mine = key_id(key)
        if head.key_id is None:
            if not fresh:
                raise refuse("it holds records or checkpoints but names no key: it was not written by this service")
            conn.execute("UPDATE audit_head SET key_id = %s WHERE id = 1", (mine,))
        elif head.key_id != mine:
            raise AuditKeyError(
                f"the audit key {path} (key id {mine}) is not the key the shared audit log in {where} is signed "
                f"with (key id {head.key_id}): every instance on one database needs the same key file; copy it "
                "from an instance already serving this database and point SCONNECT_AUDIT_KEY_FILE at it")
        head_file = head_file_for(state, where)
        try:
            pinned = read_head(head_file)
        except ValueError as exc:
            raise refuse(str(exc)) from None
        except OSError as exc:
            raise AuditKeyError(f"cannot read the audit head file {head_file}: {exc.strerror}") from None
        check_at_start(refuse, key, head, top, found, pinned)
        if found:
            check_tail(refuse, records_from(conn, max(found[-1].seq, 1)), found[-1], head.seq)
    return _Joined(key=key, key_path=path, head=head, last=found[-1] if found else None)
