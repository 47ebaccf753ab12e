"""The PostgreSQL backend of the state store: shared by every instance on one database.

Connections come from ``engine.pg.Database`` (a psycopg pool used from worker threads;
a Trio cancellation becomes a server-side cancel of the running statement). Opening
applies the store's migrations under an advisory lock, so instances starting together
apply each exactly once; a schema newer than this program raises
:class:`SchemaVersionError`.

Concurrency between instances rests on row locks, not on a process-wide lock:
``append_message`` updates the session row first (which locks it until commit), so two
instances appending to one session number their messages without a gap or a clash;
``decide_action`` is one conditional UPDATE, which PostgreSQL re-checks after waiting
for a concurrent one, so of two deciders on two instances exactly one wins.

Errors: :class:`StoreUnavailableError` when the database cannot be reached or refuses
the login (the message names the server, never the password).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ..pg import Database, Migration, PgError, PgUnavailableError, SchemaTooNewError, describe, migrate
from ._grants import GRANTS_DDL
from ._model import SchemaVersionError, StoreClosedError, StoreError, StoreUnavailableError
from ._tx import IntegrityViolation

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

COMPONENT: Final = "store"

# Append, never edit a shipped one. Times are epoch seconds (double precision, like SQLite's REAL).
MIGRATIONS: Final = (
    Migration(1, "sessions, their messages, pending actions", """
    CREATE TABLE sessions (
        session_id  TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX sessions_by_subject ON sessions (subject, updated_at);

    CREATE TABLE messages (
        session_id  TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        message     TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_id, seq)
    );

    CREATE TABLE pending_actions (
        action_id        TEXT PRIMARY KEY,
        session_id       TEXT REFERENCES sessions (session_id) ON DELETE CASCADE,
        turn_id          TEXT,
        subject          TEXT NOT NULL,
        kind             TEXT NOT NULL CHECK (kind IN ('tool', 'resource')),
        name             TEXT NOT NULL,
        arguments        TEXT NOT NULL,
        arguments_digest TEXT NOT NULL,
        level            INTEGER NOT NULL CHECK (level BETWEEN 0 AND 3),
        approver         TEXT NOT NULL CHECK (approver IN ('user', 'admin')),
        created_at       DOUBLE PRECISION NOT NULL,
        expires_at       DOUBLE PRECISION NOT NULL,
        status           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
        decided_by       TEXT,
        decided_at       DOUBLE PRECISION,
        reason           TEXT
    );
    CREATE INDEX pending_actions_by_status ON pending_actions (status, expires_at);
    CREATE INDEX pending_actions_by_session ON pending_actions (session_id, status)
    """),
    Migration(2, "pending actions name the instance that waits for them", """
    -- NULL: written by a store opened without an instance id (sconnect db copy, tools).
    ALTER TABLE pending_actions ADD COLUMN instance TEXT;
    CREATE INDEX pending_actions_by_instance ON pending_actions (instance, status)
    """),
    Migration(3, "grants: remembered approvals", GRANTS_DDL),
    Migration(4, "each instance's live connections and sessions per subject (limits across instances)", """
    -- Rewritten by each instance every few seconds (engine.server.pgbus): rows not renewed
    -- (an instance that died) are ignored once stale.
    CREATE TABLE presence (
        instance     TEXT NOT NULL,
        subject      TEXT NOT NULL,
        connections  INTEGER NOT NULL,
        sessions     INTEGER NOT NULL,
        seen_at      DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (instance, subject)
    )
    """),
    Migration(5, "memory across sessions, turns and their ratings", """
    CREATE TABLE memories (
        memory_id   TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        content     TEXT NOT NULL,
        session_id  TEXT,
        created_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX memories_by_owner ON memories (subject, agent, created_at);

    CREATE TABLE turns (
        turn_id     TEXT PRIMARY KEY,
        session_id  TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        model       TEXT,
        tools       TEXT NOT NULL,
        question    TEXT NOT NULL,
        answer      TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX turns_by_agent ON turns (agent, created_at);

    CREATE TABLE feedback (
        turn_id     TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        agent       TEXT NOT NULL,
        model       TEXT,
        tools       TEXT NOT NULL,
        rating      INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        comment     TEXT,
        created_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX feedback_by_agent ON feedback (agent, created_at)
    """),
    Migration(6, "browser console sign-ins (only the SHA-256 of each cookie)", """
    CREATE TABLE console_sessions (
        token_hash  TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        roles       TEXT NOT NULL,
        claims      TEXT NOT NULL,
        csrf        TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL,
        revoked_at  DOUBLE PRECISION
    );
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
    CREATE INDEX console_sessions_by_subject ON console_sessions (subject, created_at)
    """),
    Migration(7, "each instance's presence names the configuration it serves (sconnect check compares them)", """
    -- Filled on an instance's own row (subject ''), NULL on its per-subject rows.
    ALTER TABLE presence ADD COLUMN revision TEXT;
    ALTER TABLE presence ADD COLUMN loaded_at DOUBLE PRECISION;
    ALTER TABLE presence ADD COLUMN version TEXT;
    ALTER TABLE presence ADD COLUMN host TEXT
    """),
    Migration(8, "each presence row says how long it stays fresh (instances may beat at different paces)", """
    -- Seconds after seen_at: its writer's own heartbeat times the beats it may miss.
    -- NULL: written by an older version (readers assume its 6 s).
    ALTER TABLE presence ADD COLUMN stale_after DOUBLE PRECISION
    """),
)


@lru_cache(maxsize=256)
def _placeholders(sql: str) -> bytes:
    return sql.replace("?", "%s").encode()


@attrs.define(eq=False)
class PgTx:
    """The statement interface the store's operations use (``_tx.Tx``), over psycopg."""

    conn: psycopg.Connection[Any]
    dialect: Final = "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        import psycopg

        try:
            return self.conn.execute(_placeholders(sql), params)
        except psycopg.errors.ForeignKeyViolation:
            raise IntegrityViolation(foreign_key=True) from None
        except psycopg.errors.UniqueViolation:
            raise IntegrityViolation(foreign_key=False) from None

    def transaction(self) -> AbstractContextManager[Any]:
        return self.conn.transaction()


@attrs.define(eq=False)
class PgBackend:
    """The store's tables in one PostgreSQL database; ``await PgBackend.open(url)``."""

    db: Database
    closed: bool = False

    @classmethod
    async def open(cls, url: str, *, max_size: int = 8) -> PgBackend:
        try:
            db = await Database.open(url, max_size=max_size, application="sconnect-store")
        except PgUnavailableError as exc:
            raise StoreUnavailableError(str(exc)) from None
        try:
            await db.run(_migrate)
        except BaseException:
            await db.aclose()
            raise
        return cls(db)

    @property
    def where(self) -> str:
        return describe(self.db.url)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise StoreClosedError(f"{self.where}: the store is closed")
        try:
            return await self.db.run(lambda conn: fn(PgTx(conn), *args))
        except PgUnavailableError as exc:
            raise StoreUnavailableError(str(exc)) from None
        except PgError as exc:
            raise StoreError(str(exc)) from None
        except psycopg_error() as exc:
            # statement_timeout, a serialisation failure...: the transaction rolled back.
            raise StoreError(f"{self.where}: {type(exc).__name__}: {str(exc).strip()}") from None

    async def aclose(self) -> None:
        self.closed = True
        await self.db.aclose()


def psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _migrate(conn: psycopg.Connection[Any]) -> None:
    try:
        migrate(conn, COMPONENT, MIGRATIONS)
    except SchemaTooNewError as exc:
        raise SchemaVersionError(str(exc)) from None
