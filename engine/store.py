"""Durable engine state in SQLite: sessions, their message history, pending actions.

Design: one ``sqlite3`` connection per :class:`Store`, in WAL mode, used only from worker
threads via ``trio.to_thread.run_sync`` and serialised by a ``trio.Lock`` (FIFO, so
calls run in the order tasks made them). One connection is enough for one process: the
work per call is small, SQLite serialises writers anyway, and a single connection makes
every multi-statement operation a plain transaction without cross-connection locking.
Multi-statement writes run in ``BEGIN IMMEDIATE`` transactions, so they stay atomic
also against other processes on the same file (a CLI reading state, a second
instance); ``busy_timeout`` makes those wait instead of failing.

The schema is versioned with ``PRAGMA user_version``; :meth:`Store.open` creates or
migrates it and refuses a database written by a newer version.

Durability: ``synchronous=NORMAL`` — with WAL a power cut may lose the last commits but
never corrupts the file. The audit log (separate) is where every decision is durably
recorded.

Cancellation: waiting for the lock is cancellable; a call already running in its thread
is not interrupted — it completes (commit or rollback) and trio delivers the
cancellation at the next checkpoint. So a cancelled ``decide_action`` may still have
recorded its decision: read the action back if that matters.

Secrets: a tool's ``secret_arguments`` never reach the file. A pending action stores its
arguments with those fields as ``"[redacted]"`` and a *keyed* digest of the exact
arguments (``engine.canonical.keyed_digest``; the key is the audit log's derived
digest key, or a random one per open), so :meth:`Store.matches` can still tell whether
given arguments are exactly the approved ones while a short secret cannot be found by
trying candidates. A session's history stores each assistant tool call's arguments
redacted the same way (``append_message(..., secret=...)``). The clear values live
only in the memory of the running call.

Errors: :class:`StoreError` and subclasses (``UnknownSessionError``,
``DuplicateError``, ``StoreClosedError``, ``SchemaVersionError``); ``ValueError`` for
arguments that break the documented contract (a malformed message, an unknown status).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import attrs
import trio

from .audit import REDACTED, redact, scrub
from .canonical import canonical_json, keyed_digest
from .errors import ScalyticsError
from .sqlite import connect, split_statements, transaction

__all__ = [
    "ACTION_STATUSES",
    "DuplicateError",
    "PendingAction",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SessionRecord",
    "Store",
    "StoreClosedError",
    "StoreError",
    "UnknownSessionError",
]

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
ACTION_STATUSES: Final = ("pending", "approved", "denied", "expired", "cancelled")
_DECISIONS: Final = frozenset({"approved", "denied", "cancelled"})
_ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
_MESSAGE_KEYS: Final = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})

# Each entry upgrades user_version N-1 → N; append, never edit a shipped one.
_MIGRATIONS: Final[dict[int, str]] = {
    1: """
    CREATE TABLE sessions (
        session_id  TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  REAL NOT NULL,   -- epoch seconds
        updated_at  REAL NOT NULL
    );
    CREATE INDEX sessions_by_subject ON sessions (subject, updated_at);

    CREATE TABLE messages (
        session_id  TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,  -- 1, 2, 3 ... per session, no gaps
        message     TEXT NOT NULL,     -- canonical JSON, chat-completions message
        created_at  REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE pending_actions (
        action_id        TEXT PRIMARY KEY,
        -- NULL for a direct tool_call outside any session
        session_id       TEXT REFERENCES sessions (session_id) ON DELETE CASCADE,
        turn_id          TEXT,
        subject          TEXT NOT NULL,   -- who asked
        kind             TEXT NOT NULL CHECK (kind IN ('tool', 'resource')),
        name             TEXT NOT NULL,   -- tool name or resource URI
        arguments        TEXT NOT NULL,   -- canonical JSON
        arguments_digest TEXT NOT NULL,   -- keyed digest of the exact canonical JSON
        level            INTEGER NOT NULL CHECK (level BETWEEN 0 AND 3),
        approver         TEXT NOT NULL CHECK (approver IN ('user', 'admin')),
        created_at       REAL NOT NULL,
        expires_at       REAL NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN
                                ('pending', 'approved', 'denied', 'expired', 'cancelled')),
        decided_by       TEXT,            -- subject who approved/denied, NULL when expired
        decided_at       REAL,
        reason           TEXT
    );
    CREATE INDEX pending_actions_by_status ON pending_actions (status, expires_at);
    CREATE INDEX pending_actions_by_session ON pending_actions (session_id, status);
    """,
}


class StoreError(ScalyticsError):
    """Root of the store's errors."""


class UnknownSessionError(StoreError, LookupError):
    """No session with this id."""


class DuplicateError(StoreError):
    """A session or action with this id already exists."""


class StoreClosedError(StoreError):
    """The store was closed."""


class SchemaVersionError(StoreError):
    """The database was written by a newer version of Scalytics Connect."""


@attrs.frozen(kw_only=True)
class SessionRecord:
    session_id: str
    subject: str
    agent: str
    state: str  # lifecycle name, lower case (engine.protocol.LifecycleState values)
    created_at: float
    updated_at: float


@attrs.frozen(kw_only=True)
class PendingAction:
    """A durable approval request. ``arguments`` has the tool's secret arguments as
    ``"[redacted]"``; ``arguments_digest`` is the keyed digest of the exact arguments
    (:meth:`Store.matches`): what is approved is exactly what runs."""

    action_id: str
    session_id: str | None  # None for a direct tool_call outside any session
    turn_id: str | None
    subject: str
    kind: str  # "tool" | "resource"
    name: str
    arguments: dict[str, Any] = attrs.field(hash=False)
    arguments_digest: str
    level: int
    approver: str  # "user" | "admin"
    created_at: float
    expires_at: float
    status: str  # one of ACTION_STATUSES
    decided_by: str | None
    decided_at: float | None
    reason: str | None


# --- synchronous work, run in a worker thread ------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    # The database holds conversations: created private (engine.sqlite).
    conn = connect(path, synchronous="NORMAL", error=StoreError, foreign_keys=True)
    try:
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path}: database schema version {version} is newer than this program's "
                f"({SCHEMA_VERSION}); upgrade Scalytics Connect or use another --state-dir"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            try:
                statements = split_statements(_MIGRATIONS[target])
            except ValueError as exc:
                raise StoreError(f"migration {target}: {exc}") from None
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")


_transaction = transaction


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(session_id=row[0], subject=row[1], agent=row[2], state=row[3],
                         created_at=row[4], updated_at=row[5])


_SESSION_COLS = "session_id, subject, agent, state, created_at, updated_at"
_ACTION_COLS = (
    "action_id, session_id, turn_id, subject, kind, name, arguments, arguments_digest, "
    "level, approver, created_at, expires_at, status, decided_by, decided_at, reason"
)


def _action(row: tuple[Any, ...]) -> PendingAction:
    return PendingAction(
        action_id=row[0], session_id=row[1], turn_id=row[2], subject=row[3], kind=row[4],
        name=row[5], arguments=json.loads(row[6]), arguments_digest=row[7], level=row[8],
        approver=row[9], created_at=row[10], expires_at=row[11], status=row[12],
        decided_by=row[13], decided_at=row[14], reason=row[15],
    )


def redact_tool_calls(message: Mapping[str, Any], secret: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """A copy of a chat-completions message whose tool calls have the secret arguments
    of their tool (``secret``: tool name -> argument names) as ``"[redacted]"``.

    Arguments may be an object or, as chat-completions sends them, a JSON string; a
    string that does not parse as an object, for a tool that has secrets, is replaced
    whole (it cannot be redacted field by field, and it may hold the secret)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return dict(message)
    redacted_calls = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        hidden = frozenset(secret.get(name, ())) if isinstance(name, str) else frozenset()
        if not hidden or not isinstance(function, Mapping):
            redacted_calls.append(call)
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            cleaned: Any = redact(arguments, hidden)
        else:
            try:
                parsed = json.loads(arguments) if isinstance(arguments, str) else None
            except ValueError:
                parsed = None
            cleaned = (json.dumps(redact(parsed, hidden), ensure_ascii=False) if isinstance(parsed, dict)
                       else REDACTED)
        redacted_calls.append({**call, "function": {**function, "arguments": cleaned}})
    return {**message, "tool_calls": redacted_calls}


def _check_message(message: Mapping[str, Any]) -> None:
    if not isinstance(message, Mapping):
        raise ValueError("a message is a mapping (chat-completions style)")
    if message.get("role") not in _ROLES:
        raise ValueError(f"message role must be one of {sorted(_ROLES)}")
    extra = set(message) - _MESSAGE_KEYS
    if extra:
        raise ValueError(
            f"unexpected message keys {sorted(extra)}; allowed: {sorted(_MESSAGE_KEYS)}"
        )


# --- the store -------------------------------------------------------------------------


@attrs.define(eq=False)
class Store:
    """Async access to the state database. Create with ``await Store.open(path)``; close
    with :meth:`aclose` or use ``async with``. Safe to share between tasks."""

    path: Path
    _conn: sqlite3.Connection | None = attrs.field(repr=False)
    _digest_key: bytes = attrs.field(repr=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, repr=False)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, digest_key: bytes | None = None) -> Store:
        """Open (creating if needed, mode 0600) the database at ``path`` and bring its
        schema up to date. The parent directory must exist. ``digest_key`` (at least 32
        bytes, never stored here) keys the arguments' digests; without one, a random key
        for this open (digests then compare only within it)."""
        if digest_key is not None and len(digest_key) < 32:
            raise ValueError("digest_key must hold at least 32 bytes")
        path = Path(path)
        conn = await trio.to_thread.run_sync(_connect, path)
        return cls(path, conn, digest_key if digest_key is not None else secrets.token_bytes(32))

    def matches(self, action: PendingAction, arguments: Mapping[str, Any]) -> bool:
        """Whether ``arguments`` are exactly the ones ``action`` was asked for."""
        return hmac.compare_digest(action.arguments_digest, keyed_digest(self._digest_key, dict(arguments)))

    async def aclose(self) -> None:
        """Close the connection (idempotent). Waits for the call in progress, if any."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        # Shielded and bounded: closing must happen even when the scope was cancelled.
        with trio.move_on_after(5, shield=True):
            await self.aclose()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreClosedError(f"{self.path}: the store is closed")
            return await trio.to_thread.run_sync(fn, conn, *args)

    # --- sessions ---

    async def create_session(self, session_id: str, subject: str, agent: str, *,
                             state: str = "initialized", now: float | None = None) -> SessionRecord:
        """Record a new session. Raises :class:`DuplicateError` if the id exists."""
        at = time.time() if now is None else now
        record = SessionRecord(session_id=session_id, subject=subject, agent=agent,
                               state=state, created_at=at, updated_at=at)

        def work(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO sessions ({_SESSION_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                             attrs.astuple(record))
            except sqlite3.IntegrityError:
                raise DuplicateError(f"session {session_id!r} already exists") from None

        await self._run(work)
        return record

    async def get_session(self, session_id: str) -> SessionRecord | None:
        def work(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = ?",
                               (session_id,)).fetchone()
            return None if row is None else _session(row)

        return await self._run(work)

    async def sessions_of(self, subject: str) -> tuple[SessionRecord, ...]:
        """Every session of ``subject``, most recently updated first."""
        def work(conn: sqlite3.Connection) -> tuple[SessionRecord, ...]:
            rows = conn.execute(
                f"SELECT {_SESSION_COLS} FROM sessions WHERE subject = ? "
                "ORDER BY updated_at DESC, session_id", (subject,)).fetchall()
            return tuple(map(_session, rows))

        return await self._run(work)

    async def set_session_state(self, session_id: str, state: str, *,
                                now: float | None = None) -> None:
        """Record a lifecycle transition (the caller enforces which are legal).
        Raises :class:`UnknownSessionError`."""
        at = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ?",
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
        _check_message(message)
        if secret:
            message = redact_tool_calls(message, secret)
        if hide:
            message = scrub(dict(message), hide)
        text = canonical_json(dict(message))  # fails here, in the caller, not in the thread
        at = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                touched = conn.execute("UPDATE sessions SET updated_at = ? WHERE session_id = ?",
                                       (at, session_id)).rowcount
                if touched != 1:
                    raise UnknownSessionError(f"no session {session_id!r}")
                seq: int = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session_id = ?",
                    (session_id,)).fetchone()[0]
                conn.execute("INSERT INTO messages (session_id, seq, message, created_at) "
                             "VALUES (?, ?, ?, ?)", (session_id, seq, text, at))
            return seq

        return await self._run(work)

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        """The session's history in order, as fresh chat-completions dicts (empty for an
        unknown session)."""
        def work(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT message FROM messages WHERE session_id = ? ORDER BY seq",
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

        def work(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO pending_actions ({_ACTION_COLS}) "
                             f"VALUES ({', '.join('?' * 16)})", row)
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise UnknownSessionError(f"no session {session_id!r}") from None
                raise DuplicateError(f"action {record.action_id!r} already exists") from None

        await self._run(work)
        return record

    async def get_action(self, action_id: str) -> PendingAction | None:
        """The action in whatever status, or None if the id is unknown."""
        def work(conn: sqlite3.Connection) -> PendingAction | None:
            row = conn.execute(f"SELECT {_ACTION_COLS} FROM pending_actions WHERE action_id = ?",
                               (action_id,)).fetchone()
            return None if row is None else _action(row)

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

        def work(conn: sqlite3.Connection) -> tuple[PendingAction, ...]:
            rows = conn.execute(f"SELECT {_ACTION_COLS} FROM pending_actions {where} "
                                "ORDER BY created_at, action_id", params).fetchall()
            return tuple(map(_action, rows))

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
        if status not in _DECISIONS:
            raise ValueError(f"a decision is one of {sorted(_DECISIONS)}")
        at = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                done = conn.execute(
                    "UPDATE pending_actions SET status = ?, decided_by = ?, decided_at = ?, "
                    "reason = ? WHERE action_id = ? AND status = 'pending' AND expires_at > ?",
                    (status, decided_by, at, reason, action_id, at)).rowcount
                if not done:
                    conn.execute(
                        "UPDATE pending_actions SET status = 'expired', decided_at = ?, "
                        "reason = 'expired' WHERE action_id = ? AND status = 'pending' "
                        "AND expires_at <= ?", (at, action_id, at))
            return done == 1

        return await self._run(work)

    async def expire_actions(self, now: float | None = None) -> tuple[PendingAction, ...]:
        """Mark every pending action whose ``expires_at`` has passed as ``expired`` and
        return them (as they are after the change), so the caller can tell waiters."""
        at = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> tuple[PendingAction, ...]:
            with _transaction(conn):
                ids = [r[0] for r in conn.execute(
                    "SELECT action_id FROM pending_actions WHERE status = 'pending' "
                    "AND expires_at <= ? ORDER BY created_at, action_id", (at,))]
                conn.execute(
                    "UPDATE pending_actions SET status = 'expired', decided_at = ?, "
                    "reason = 'expired' WHERE status = 'pending' AND expires_at <= ?", (at, at))
                rows = [conn.execute(f"SELECT {_ACTION_COLS} FROM pending_actions "
                                     "WHERE action_id = ?", (i,)).fetchone() for i in ids]
            return tuple(_action(r) for r in rows)

        return await self._run(work)

    # --- retention (appended: engine.server.maintenance calls these) ---

    async def cancel_pending_actions(self, reason: str, now: float | None = None) -> int:
        """Mark every still-``pending`` action ``cancelled`` (at start: nobody waits for the
        ones a previous run left behind). Returns how many."""
        at = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                return conn.execute(
                    "UPDATE pending_actions SET status = 'cancelled', decided_at = ?, reason = ? "
                    "WHERE status = 'pending'", (at, reason)).rowcount

        return await self._run(work)

    async def prune(self, before: float, keep_sessions: frozenset[str] = frozenset()) -> tuple[int, int]:
        """Delete finished actions decided before ``before`` and sessions (with their history
        and actions) not updated since, except ``keep_sessions`` (live ones). Returns
        (sessions, actions) deleted."""

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            with _transaction(conn):
                actions = conn.execute(
                    "DELETE FROM pending_actions WHERE status != 'pending' "
                    "AND COALESCE(decided_at, created_at) < ?", (before,)).rowcount
                stale = [row[0] for row in conn.execute(
                    "SELECT session_id FROM sessions WHERE updated_at < ?", (before,))
                    if row[0] not in keep_sessions]
                for session_id in stale:
                    # Its pending actions and messages go with it (ON DELETE CASCADE).
                    conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            return len(stale), actions

        return await self._run(work)
