"""Durable engine state: sessions, their message history, pending actions — on SQLite
(one process, the default) or PostgreSQL (several instances sharing one database).

:class:`Store` holds everything that does not depend on the database (argument checks,
redaction, digests) and runs each operation as one function in a worker thread through
its backend: ``_sqlite`` (one connection, serialised, ``BEGIN IMMEDIATE``) or ``_pg``
(a psycopg pool; row locks make concurrent instances safe). The operations' SQL is the
same for both (``_tx``).

Cancellation: a call already running in its thread is not abandoned — it completes
(commit or rollback) and the cancellation is delivered afterwards; on PostgreSQL the
running statement is cancelled server-side first. So a cancelled ``decide_action`` may
still have recorded its decision: read the action back if that matters.

Secrets: a tool's ``secret_arguments`` never reach the database. A pending action stores
its arguments with those fields as ``"[redacted]"`` and a *keyed* digest of the exact
arguments (``engine.canonical.keyed_digest``; the key is the audit log's derived
digest key, or a random one per open), so :meth:`Store.matches` can still tell whether
given arguments are exactly the approved ones while a short secret cannot be found by
trying candidates. A session's history stores each assistant tool call's arguments
redacted the same way (``append_message(..., secret=...)``). The clear values live
only in the memory of the running call.

Errors: :class:`StoreError` and subclasses (``UnknownSessionError``,
``DuplicateError``, ``StoreClosedError``, ``SchemaVersionError``,
``StoreUnavailableError``); ``ValueError`` for arguments that break the documented
contract (a malformed message, an unknown status).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import attrs
import trio

from .. import tracing
from ..audit import redact, scrub
from ..canonical import canonical_json, keyed_digest
from . import _grants
from ._grants import GrantRecord
from ._learning import LearningOps
from ._model import (
    ACTION_COLS,
    ACTION_STATUSES,
    CONSOLE_COLS,
    DECISIONS,
    SESSION_COLS,
    ConsoleSessionRecord,
    DuplicateError,
    PendingAction,
    SessionRecord,
    StoreUnavailableError,
    UnknownSessionError,
    action_row,
    check_message,
    console_row,
    redact_tool_calls,
    session_row,
)
from ._tx import IntegrityViolation, Tx

T = TypeVar("T")


class Backend(Protocol):
    @property
    def where(self) -> str: ...  # for messages: a path, or user@host:port/db

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def aclose(self) -> None: ...


# --- the store -------------------------------------------------------------------------


@attrs.define(eq=False)
class Store(LearningOps):
    """Async access to the state database. Create with ``await Store.open(path)``
    (SQLite) or ``await Store.connect(url)`` (PostgreSQL); close with :meth:`aclose` or
    use ``async with``. Safe to share between tasks. Memories, turns, ratings: ``_learning``."""

    path: Path | None  # the SQLite file; None on PostgreSQL
    _backend: Backend = attrs.field(repr=False)
    _digest_key: bytes = attrs.field(repr=False)
    #: PostgreSQL: this instance's id, recorded with the actions it waits for, so that its
    #: restart cancels its own orphans and never another instance's live ones.
    instance: str | None = None
    #: Whether the last call reached the database (False after StoreUnavailableError,
    #: True again after the next call that succeeds): for readiness checks.
    available: bool = True

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, digest_key: bytes | None = None) -> Store:
        """Open (creating if needed, mode 0600) the database at ``path`` and bring its
        schema up to date. The parent directory must exist. ``digest_key`` (at least 32
        bytes, never stored here) keys the arguments' digests; without one, a random key
        for this open (digests then compare only within it)."""
        from ._sqlite import SqliteBackend

        key = _key(digest_key)
        path = Path(path)
        return cls(path, await SqliteBackend.open(path), key)

    @classmethod
    async def connect(cls, url: str, *, digest_key: bytes | None = None, max_connections: int = 8,
                      instance: str | None = None) -> Store:
        """Connect to the PostgreSQL database at ``url`` (a pool of up to
        ``max_connections``) and bring its schema up to date, under an advisory lock.
        ``instance`` names this server among those sharing the database (stable across
        its restarts). Raises :class:`StoreUnavailableError` (down, wrong password) or
        :class:`SchemaVersionError` (migrated by a newer program)."""
        from ._pg import PgBackend

        key = _key(digest_key)
        return cls(None, await PgBackend.open(url, max_size=max_connections), key, instance=instance)

    @property
    def where(self) -> str:
        """The database, for messages: a path or ``user@host:port/db``."""
        return self._backend.where

    def matches(self, action: PendingAction, arguments: Mapping[str, Any]) -> bool:
        """Whether ``arguments`` are exactly the ones ``action`` was asked for."""
        return hmac.compare_digest(action.arguments_digest, keyed_digest(self._digest_key, dict(arguments)))

    async def aclose(self) -> None:
        """Close the connection(s) (idempotent). Waits for the calls in progress, if any."""
        await self._backend.aclose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        # Shielded and bounded: closing must happen even when the scope was cancelled.
        with trio.move_on_after(5, shield=True):
            await self.aclose()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # fn is the operation's inner function: its qualname names the operation.
        operation = fn.__qualname__.split(".<locals>")[0].rsplit(".", 1)[-1]
        try:
            with tracing.span(f"sconnect.store.{operation}", **{
                    "db.system": "sqlite" if self.path is not None else "postgresql", "db.operation": operation}):
                result = await self._backend.run(fn, *args)
        except StoreUnavailableError:
            self.available = False
            raise
        self.available = True
        return result

    async def ping(self) -> None:
        """One round trip to the database; raises :class:`StoreUnavailableError` when it
        cannot be reached (and so updates :attr:`available`)."""
        def work(tx: Tx) -> None:
            tx.execute("SELECT 1").fetchone()

        await self._run(work)

    # --- sessions ---

    async def create_session(self, session_id: str, subject: str, agent: str, *,
                             state: str = "initialized", now: float | None = None) -> SessionRecord:
        """Record a new session. Raises :class:`DuplicateError` if the id exists."""
        at = time.time() if now is None else now
        record = SessionRecord(session_id=session_id, subject=subject, agent=agent,
                               state=state, created_at=at, updated_at=at)

        def work(tx: Tx) -> None:
            try:
                tx.execute(f"INSERT INTO sessions ({SESSION_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                             attrs.astuple(record))
            except IntegrityViolation:
                raise DuplicateError(f"session {session_id!r} already exists") from None

        await self._run(work)
        return record

    async def get_session(self, session_id: str) -> SessionRecord | None:
        def work(tx: Tx) -> SessionRecord | None:
            row = tx.execute(f"SELECT {SESSION_COLS} FROM sessions WHERE session_id = ?",
                               (session_id,)).fetchone()
            return None if row is None else session_row(row)

        return await self._run(work)

    async def sessions_of(self, subject: str) -> tuple[SessionRecord, ...]:
        """Every session of ``subject``, most recently updated first."""
        def work(tx: Tx) -> tuple[SessionRecord, ...]:
            rows = tx.execute(
                f"SELECT {SESSION_COLS} FROM sessions WHERE subject = ? "
                "ORDER BY updated_at DESC, session_id", (subject,)).fetchall()
            return tuple(map(session_row, rows))

        return await self._run(work)

    async def set_session_state(self, session_id: str, state: str, *,
                                now: float | None = None) -> None:
        """Record a lifecycle transition (the caller enforces which are legal).
        Raises :class:`UnknownSessionError`."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> None:
            cur = tx.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ?",
                               (state, at, session_id))
            if cur.rowcount != 1:
                raise UnknownSessionError(f"no session {session_id!r}")

        await self._run(work)

    # --- messages ---

    async def append_message(self, session_id: str, message: Mapping[str, Any], *,
                             secret: Mapping[str, Iterable[str]] | None = None, hide: Iterable[str] = (),
                             now: float | None = None) -> int:
        """Append one chat-completions message (``role``, ``content``, optionally
        ``tool_calls``, ``tool_call_id``, ``name``) and return its sequence number
        (1-based, gap-free per session, in call order). ``secret`` maps a tool name to
        its secret argument names: those arguments of its tool calls are stored as
        ``"[redacted]"``; every text in ``hide`` (the secret values of the call a tool
        result answers, ``engine.audit.secret_values``) is too, wherever it appears.
        Raises :class:`UnknownSessionError`, or ``ValueError`` for a malformed message."""
        check_message(message)
        if secret:
            message = redact_tool_calls(message, secret)
        if hide:
            message = scrub(dict(message), hide)
        text = canonical_json(dict(message))  # fails here, in the caller, not in the thread
        at = time.time() if now is None else now

        def work(tx: Tx) -> int:
            with tx.transaction():
                touched = tx.execute("UPDATE sessions SET updated_at = ? WHERE session_id = ?",
                                       (at, session_id)).rowcount
                if touched != 1:
                    raise UnknownSessionError(f"no session {session_id!r}")
                seq: int = tx.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?",
                    (session_id,)).fetchone()[0]
                tx.execute("INSERT INTO messages (session_id, seq, message, created_at) "
                             "VALUES (?, ?, ?, ?)", (session_id, seq, text, at))
            return seq

        return await self._run(work)

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        """The session's history in order, as fresh chat-completions dicts (empty for an
        unknown session)."""
        def work(tx: Tx) -> list[dict[str, Any]]:
            rows = tx.execute("SELECT message FROM messages WHERE session_id = ? ORDER BY seq",
                                (session_id,)).fetchall()
            return [json.loads(r[0]) for r in rows]

        return await self._run(work)

    # --- pending actions ---

    async def add_pending_action(
        self,
        *,
        session_id: str | None,
        subject: str,
        kind: str,
        name: str,
        arguments: Mapping[str, Any],
        level: int,
        approver: str,
        expires_at: float,
        secret: Iterable[str] = (),
        action_id: str | None = None,
        turn_id: str | None = None,
        now: float | None = None,
    ) -> PendingAction:
        """Persist an approval request (status ``pending``) and return it, the
        arguments named in ``secret`` redacted (module docstring). Raises
        :class:`DuplicateError`, :class:`UnknownSessionError`, or ``ValueError`` for a
        bad ``kind``/``approver``/``level`` or arguments that are not JSON."""
        if kind not in ("tool", "resource"):
            raise ValueError("kind must be 'tool' or 'resource'")
        if approver not in ("user", "admin"):
            raise ValueError("approver must be 'user' or 'admin'")
        if type(level) is not int or not 0 <= level <= 3:
            raise ValueError("level must be an integer 0..3")
        args = dict(arguments)
        text = canonical_json(redact(args, secret))
        record = PendingAction(
            action_id=action_id or uuid.uuid4().hex, session_id=session_id, turn_id=turn_id,
            subject=subject, kind=kind, name=name, arguments=json.loads(text),
            arguments_digest=keyed_digest(self._digest_key, args), level=level, approver=approver,
            created_at=time.time() if now is None else now, expires_at=expires_at,
            status="pending", decided_by=None, decided_at=None, reason=None,
        )
        r = record
        row = (r.action_id, r.session_id, r.turn_id, r.subject, r.kind, r.name, text,
               r.arguments_digest, r.level, r.approver, r.created_at, r.expires_at, r.status,
               r.decided_by, r.decided_at, r.reason)

        instance = self.instance

        def work(tx: Tx) -> None:
            try:
                if tx.dialect == "postgresql":
                    tx.execute(f"INSERT INTO pending_actions ({ACTION_COLS}, instance) "
                               f"VALUES ({', '.join('?' * 17)})", (*row, instance))
                else:
                    tx.execute(f"INSERT INTO pending_actions ({ACTION_COLS}) "
                               f"VALUES ({', '.join('?' * 16)})", row)
            except IntegrityViolation as exc:
                if exc.foreign_key:
                    raise UnknownSessionError(f"no session {session_id!r}") from None
                raise DuplicateError(f"action {record.action_id!r} already exists") from None

        await self._run(work)
        return record

    async def get_action(self, action_id: str) -> PendingAction | None:
        """The action in whatever status, or None if the id is unknown."""
        def work(tx: Tx) -> PendingAction | None:
            row = tx.execute(f"SELECT {ACTION_COLS} FROM pending_actions WHERE action_id = ?",
                               (action_id,)).fetchone()
            return None if row is None else action_row(row)

        return await self._run(work)

    async def pending_actions(self, session_id: str | None = None,
                              status: str | None = "pending", *,
                              approver: str | None = None) -> tuple[PendingAction, ...]:
        """Actions, oldest first, filtered by session (None: all), status (None: any)
        and approver (``user``/``admin``; None: any). Note that ``pending`` ones may be
        past ``expires_at`` until :meth:`expire_actions` runs."""
        if status is not None and status not in ACTION_STATUSES:
            raise ValueError(f"status must be one of {ACTION_STATUSES}")
        clauses, params = [], []
        for column, value in (("session_id", session_id), ("status", status),
                              ("approver", approver)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def work(tx: Tx) -> tuple[PendingAction, ...]:
            rows = tx.execute(f"SELECT {ACTION_COLS} FROM pending_actions {where} "
                                "ORDER BY created_at, action_id", params).fetchall()
            return tuple(map(action_row, rows))

        return await self._run(work)

    async def decide_action(self, action_id: str, status: str, decided_by: str | None,
                            reason: str | None = None, *, now: float | None = None) -> bool:
        """Move a pending, unexpired action to ``approved``, ``denied`` or ``cancelled``.

        Returns True if this call made the transition; False if the action is unknown,
        no longer pending (a second approval), or past its expiry — in which case it is
        marked ``expired`` in the same transaction. Atomic: of two concurrent deciders
        (even in two processes) exactly one gets True. Use :meth:`get_action` to tell
        the False cases apart.
        """
        if status not in DECISIONS:
            raise ValueError(f"a decision is one of {sorted(DECISIONS)}")
        at = time.time() if now is None else now

        def work(tx: Tx) -> bool:
            with tx.transaction():
                done = tx.execute(
                    "UPDATE pending_actions SET status = ?, decided_by = ?, decided_at = ?, "
                    "reason = ? WHERE action_id = ? AND status = 'pending' AND expires_at > ?",
                    (status, decided_by, at, reason, action_id, at)).rowcount
                if not done:
                    tx.execute(
                        "UPDATE pending_actions SET status = 'expired', decided_at = ?, "
                        "reason = 'expired' WHERE action_id = ? AND status = 'pending' "
                        "AND expires_at <= ?", (at, action_id, at))
            return done == 1

        return await self._run(work)

    async def expire_actions(self, now: float | None = None) -> tuple[PendingAction, ...]:
        """Mark every pending action whose ``expires_at`` has passed as ``expired`` and
        return them (as they are after the change), so the caller can tell waiters."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> tuple[PendingAction, ...]:
            if tx.dialect == "postgresql":
                # Several instances expire concurrently: each action is reported by the one
                # whose UPDATE changed it, never by two.
                changed = tx.execute(
                    "UPDATE pending_actions SET status = 'expired', decided_at = ?, reason = 'expired' "
                    f"WHERE status = 'pending' AND expires_at <= ? RETURNING {ACTION_COLS}", (at, at)).fetchall()
                return tuple(sorted(map(action_row, changed), key=lambda a: (a.created_at, a.action_id)))
            with tx.transaction():
                ids = [r[0] for r in tx.execute(
                    "SELECT action_id FROM pending_actions WHERE status = 'pending' "
                    "AND expires_at <= ? ORDER BY created_at, action_id", (at,))]
                tx.execute(
                    "UPDATE pending_actions SET status = 'expired', decided_at = ?, "
                    "reason = 'expired' WHERE status = 'pending' AND expires_at <= ?", (at, at))
                rows = [tx.execute(f"SELECT {ACTION_COLS} FROM pending_actions "
                                     "WHERE action_id = ?", (i,)).fetchone() for i in ids]
            return tuple(action_row(r) for r in rows)

        return await self._run(work)

    # --- retention (appended: engine.server.maintenance calls these) ---

    async def cancel_pending_actions(self, reason: str, now: float | None = None) -> int:
        """Mark every still-``pending`` action ``cancelled`` (at start: nobody waits for the
        ones a previous run left behind). Returns how many. On PostgreSQL with an
        :attr:`instance`, only that instance's: the others' may be live."""
        at = time.time() if now is None else now
        instance = self.instance

        def work(tx: Tx) -> int:
            mine, params = "", [at, reason]
            if tx.dialect == "postgresql" and instance is not None:
                mine = " AND instance = ?"
                params.append(instance)
            with tx.transaction():
                return tx.execute(
                    "UPDATE pending_actions SET status = 'cancelled', decided_at = ?, reason = ? "
                    f"WHERE status = 'pending'{mine}", params).rowcount

        return await self._run(work)

    async def prune(self, before: float, keep_sessions: frozenset[str] = frozenset()) -> tuple[int, int]:
        """Delete finished actions decided before ``before`` and sessions (with their history
        and actions) not updated since, except ``keep_sessions`` (live ones). Returns
        (sessions, actions) deleted."""

        def work(tx: Tx) -> tuple[int, int]:
            with tx.transaction():
                actions = tx.execute(
                    "DELETE FROM pending_actions WHERE status != 'pending' "
                    "AND COALESCE(decided_at, created_at) < ?", (before,)).rowcount
                stale = [row[0] for row in tx.execute(
                    "SELECT session_id FROM sessions WHERE updated_at < ?", (before,))
                    if row[0] not in keep_sessions]
                for session_id in stale:
                    # Its pending actions and messages go with it (ON DELETE CASCADE).
                    tx.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return len(stale), actions

        return await self._run(work)

    # --- grants (appended: engine/grants, engine/server/grants.py) ---

    def digest(self, value: Any) -> str:
        """The keyed digest of a JSON value under this store's key (how grants keep what
        they pin without keeping a secret argument in the clear)."""
        return keyed_digest(self._digest_key, value)

    async def add_grant(self, record: GrantRecord) -> GrantRecord:
        """Persist a new grant. Raises :class:`DuplicateError` (its id exists) or
        :class:`UnknownSessionError` (a session grant for a session that is not stored)."""

        def work(tx: Tx) -> None:
            try:
                _grants.insert(tx, record)
            except IntegrityViolation as exc:
                if exc.foreign_key:
                    raise UnknownSessionError(f"no session {record.session_id!r}") from None
                raise DuplicateError(f"grant {record.grant_id!r} already exists") from None

        await self._run(work)
        return record

    async def live_grants(self, subject: str, kind: str, name: str, *,
                          now: float | None = None) -> tuple[GrantRecord, ...]:
        """``subject``'s grants for this tool (or resource) that are live and unexpired, oldest first."""
        at = time.time() if now is None else now
        return await self._run(_grants.live_for, subject, kind, name, at)

    async def grants(self, *, subject: str | None = None, session_id: str | None = None,
                     live: bool = True, limit: int = 500, now: float | None = None) -> tuple[GrantRecord, ...]:
        """Grants newest first: covering or made by ``subject`` (None: everyone's), of one
        session, only the live unexpired ones unless ``live`` is False."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> tuple[GrantRecord, ...]:
            return _grants.select(tx, subject=subject, session_id=session_id, live_after=at if live else None,
                                  limit=limit)

        return await self._run(work)

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        return await self._run(_grants.get, grant_id)

    async def end_grant(self, grant_id: str, status: str, by: str | None, reason: str, *,
                        now: float | None = None) -> bool:
        """End a live grant (``revoked`` by a person, ``ended`` by a reload). True when this
        call ended it; False when it was unknown or had already ended."""
        if status not in ("revoked", "ended"):
            raise ValueError("a grant ends as 'revoked' or 'ended'")
        at = time.time() if now is None else now
        return await self._run(_grants.end, grant_id, status, by, reason, at)

    async def prune_grants(self, before: float) -> int:
        """Delete grants that ended or expired before ``before`` (the retention sweep). Returns how many."""

        def work(tx: Tx) -> int:
            with tx.transaction():
                return int(tx.execute(
                    "DELETE FROM grants WHERE expires_at < ? OR (status != 'live' AND ended_at < ?)",
                    (before, before)).rowcount)

        return await self._run(work)

    # --- browser console sign-ins ---

    async def add_console_session(self, record: ConsoleSessionRecord, *, keep_per_subject: int = 50,
                                  now: float | None = None) -> None:
        """Store a new console sign-in. In the same transaction, rows expired or signed out
        by ``now`` are swept, and the subject's oldest sign-ins past ``keep_per_subject`` are
        dropped (a flood of sign-ins cannot grow the table without limit)."""
        if keep_per_subject < 1:
            raise ValueError("keep_per_subject must be at least 1")
        at = time.time() if now is None else now
        row = (record.token_hash, record.subject, json.dumps(sorted(record.roles)),
               json.dumps(record.claims, default=str), record.csrf, record.created_at, record.expires_at)

        def work(tx: Tx) -> None:
            with tx.transaction():
                tx.execute("DELETE FROM console_sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL", (at,))
                try:
                    tx.execute(f"INSERT INTO console_sessions ({CONSOLE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                except IntegrityViolation:
                    raise DuplicateError("a console session with this cookie exists already") from None
                tx.execute(
                    "DELETE FROM console_sessions WHERE subject = ? AND token_hash NOT IN ("
                    "SELECT token_hash FROM console_sessions WHERE subject = ? "
                    "ORDER BY created_at DESC, token_hash LIMIT ?)",
                    (record.subject, record.subject, keep_per_subject))

        await self._run(work)

    async def console_session(self, token_hash: str, *, now: float | None = None) -> ConsoleSessionRecord | None:
        """The live sign-in with this cookie hash: None when unknown, expired or signed out."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> ConsoleSessionRecord | None:
            row = tx.execute(f"SELECT {CONSOLE_COLS} FROM console_sessions WHERE token_hash = ? "
                             "AND revoked_at IS NULL AND expires_at > ?", (token_hash, at)).fetchone()
            return console_row(row) if row else None

        return await self._run(work)

    async def revoke_console_session(self, token_hash: str, *, now: float | None = None) -> bool:
        """Sign out: the cookie is refused from now on, by every instance. True when it was live."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> bool:
            with tx.transaction():
                return bool(tx.execute("UPDATE console_sessions SET revoked_at = ? "
                                       "WHERE token_hash = ? AND revoked_at IS NULL", (at, token_hash)).rowcount)

        return await self._run(work)

    async def sweep_console_sessions(self, *, now: float | None = None) -> int:
        """Delete the sign-ins expired or signed out by ``now``; how many."""
        at = time.time() if now is None else now

        def work(tx: Tx) -> int:
            with tx.transaction():
                return int(tx.execute("DELETE FROM console_sessions WHERE expires_at <= ? "
                                      "OR revoked_at IS NOT NULL", (at,)).rowcount)

        return await self._run(work)


def _key(digest_key: bytes | None) -> bytes:
    if digest_key is not None and len(digest_key) < 32:
        raise ValueError("digest_key must hold at least 32 bytes")
    return digest_key if digest_key is not None else secrets.token_bytes(32)
