"""The SQLite backend of the state store: one connection, serialised, in worker threads.

One ``sqlite3`` connection per store, in WAL mode, used only from worker threads via
``trio.to_thread.run_sync`` and serialised by a ``trio.Lock`` (FIFO, so calls run in the
order tasks made them). One connection is enough for one process: the work per call is
small, SQLite serialises writers anyway, and a single connection makes every
multi-statement operation a plain transaction without cross-connection locking.
Multi-statement writes run in ``BEGIN IMMEDIATE`` transactions, so they stay atomic also
against other processes on the same file (a CLI reading state, a second instance);
``busy_timeout`` makes those wait instead of failing.

The schema is versioned with ``PRAGMA user_version``; opening creates or migrates it and
refuses a database written by a newer version (:class:`SchemaVersionError`).

Durability: ``synchronous=NORMAL`` — with WAL a power cut may lose the last commits but
never corrupts the file. The audit log (separate) is where every decision is durably
recorded.

Cancellation: waiting for the lock is cancellable; a call already running in its thread
is not interrupted — it completes (commit or rollback) and trio delivers the
cancellation at the next checkpoint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

from ..sqlite import connect, split_statements, transaction
from ._grants import GRANTS_DDL
from ._model import SCHEMA_VERSION, SchemaVersionError, StoreClosedError, StoreError
from ._tx import IntegrityViolation

T = TypeVar("T")

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
    # Grants: remembered approvals (engine/grants; the table in engine/store/_grants.py).
    2: GRANTS_DDL + ";\n",
    # Memory across sessions, turns and their ratings (engine/store/_learning.py).
    3: """
    CREATE TABLE memories (
        memory_id   TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,    -- whose memory: only they (and their agents' turns) read it
        agent       TEXT NOT NULL,
        content     TEXT NOT NULL,
        session_id  TEXT,             -- where it was remembered; no FK: it outlives the session
        created_at  REAL NOT NULL
    );
    CREATE INDEX memories_by_owner ON memories (subject, agent, created_at);

    CREATE TABLE turns (
        turn_id     TEXT PRIMARY KEY,
        session_id  TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        model       TEXT,             -- the model that answered; NULL when none did
        tools       TEXT NOT NULL,    -- JSON list of the tools the turn called
        question    TEXT NOT NULL,
        answer      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX turns_by_agent ON turns (agent, created_at);

    CREATE TABLE feedback (
        turn_id     TEXT PRIMARY KEY, -- one rating per turn: a new one replaces it
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        model       TEXT,
        tools       TEXT NOT NULL,
        rating      INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        comment     TEXT,
        created_at  REAL NOT NULL
    );
    CREATE INDEX feedback_by_agent ON feedback (agent, created_at);
    """,
    4: """
    -- Browser console sign-ins (engine.console), so that they survive a restart and
    -- serve every instance. The cookie's value is never stored, only its SHA-256.
    CREATE TABLE console_sessions (
        token_hash  TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        roles       TEXT NOT NULL,   -- JSON list
        claims      TEXT NOT NULL,   -- JSON object: the token's verified claims
        csrf        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL,
        revoked_at  REAL             -- signed out; swept with the expired ones
    );
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
    CREATE INDEX console_sessions_by_subject ON console_sessions (subject, created_at);
    """,
}



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
    with transaction(conn):
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



@attrs.define(eq=False)
class SqliteTx:
    """The statement interface the store's operations use (``_tx.Tx``), over sqlite3."""

    conn: sqlite3.Connection
    dialect: Final = "sqlite"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise IntegrityViolation(foreign_key="FOREIGN KEY" in str(exc)) from None

    def transaction(self) -> AbstractContextManager[None]:
        return transaction(self.conn)


@attrs.define(eq=False)
class SqliteBackend:
    """The state database file; ``await SqliteBackend.open(path)``."""

    path: Path
    _conn: sqlite3.Connection | None = attrs.field(repr=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, repr=False)

    @classmethod
    async def open(cls, path: Path) -> SqliteBackend:
        return cls(path, await trio.to_thread.run_sync(_connect, path))

    @property
    def where(self) -> str:
        return str(self.path)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreClosedError(f"{self.path}: the store is closed")
            return await trio.to_thread.run_sync(fn, SqliteTx(conn), *args)

    async def aclose(self) -> None:
        """Close the connection (idempotent). Waits for the call in progress, if any."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

