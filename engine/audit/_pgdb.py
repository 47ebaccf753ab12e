"""The audit log's tables in PostgreSQL, and the statements every instance runs on them.

The same records and checkpoints as SQLite's ``audit.db`` (``_db``), same columns, same
hashes (``time`` and ``duration_ms`` are DOUBLE PRECISION, which gives back exactly the
float that was hashed), plus ``audit_head``: the one row every writer locks to extend the
chain (``_shared``). Records and checkpoints are append-only by trigger (UPDATE, DELETE
and TRUNCATE raise); as with SQLite the triggers stop mistakes and ordinary clients, and
the chain, the signed head and the signed checkpoints catch someone who disables them.

Migrations are the ``audit`` component's (``engine.pg.migrate``: versioned, applied once
under an advisory lock however many instances start together).

Blocking functions on a psycopg connection: call them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from ..pg import Migration
from ._checkpoints import CHECKPOINT_COLUMNS, Checkpoint
from ._record import COLUMNS, GENESIS_HASH
from ._shared import SharedHead

if TYPE_CHECKING:
    import psycopg

COMPONENT: Final = "audit"

# Append, never edit a shipped one.
MIGRATIONS: Final = (
    Migration(1, "the shared audit log: records, checkpoints, the signed head", f"""
    CREATE TABLE audit_records (
        seq              BIGINT PRIMARY KEY,
        version          INTEGER NOT NULL,
        time             DOUBLE PRECISION NOT NULL,
        time_iso         TEXT NOT NULL,
        kind             TEXT NOT NULL,
        subject          TEXT,
        session_id       TEXT,
        agent            TEXT,
        action           TEXT,
        target           TEXT,
        arguments        TEXT,
        arguments_digest TEXT,
        decision         TEXT,
        decided_by       TEXT,
        approver         TEXT,
        outcome          TEXT,
        duration_ms      DOUBLE PRECISION,
        policy_revision  TEXT,
        details          TEXT NOT NULL,
        prev_hash        TEXT NOT NULL,
        hash             TEXT NOT NULL
    );
    CREATE INDEX audit_records_by_time ON audit_records (time);
    CREATE INDEX audit_records_by_subject ON audit_records (subject, time);
    CREATE INDEX audit_records_by_target ON audit_records (target, time);

    CREATE TABLE audit_checkpoints (
        id         BIGINT PRIMARY KEY,
        time       DOUBLE PRECISION NOT NULL,
        time_iso   TEXT NOT NULL,
        seq        BIGINT NOT NULL,
        head_hash  TEXT NOT NULL,
        reason     TEXT NOT NULL,
        prev_mac   TEXT NOT NULL,
        mac        TEXT NOT NULL
    );

    -- The chain's head, locked by every writer: mac signs (seq, hash) under the audit key.
    CREATE TABLE audit_head (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        seq     BIGINT NOT NULL,
        hash    TEXT NOT NULL,
        key_id  TEXT,
        mac     TEXT
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}');

    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit log tables are append-only: % on % refused', TG_OP, TG_TABLE_NAME;
    END
    $$;
    CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()
    """),
)

SELECT_RECORDS: Final = f"SELECT {', '.join(COLUMNS)} FROM audit_records"
INSERT_RECORD: Final = (f"INSERT INTO audit_records ({', '.join(COLUMNS)}) "
                        f"VALUES ({', '.join(['%s'] * len(COLUMNS))})")
INSERT_CHECKPOINT: Final = (f"INSERT INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "
                            f"VALUES ({', '.join(['%s'] * len(CHECKPOINT_COLUMNS))})")


def lock_head(conn: psycopg.Connection[Any]) -> SharedHead:
    """The head row, locked until the transaction ends (the caller has one open)."""
    row = conn.execute("SELECT seq, hash, key_id, mac FROM audit_head WHERE id = 1 FOR UPDATE").fetchone()
    if row is None:
        raise LookupError("the audit_head row is missing")
    return SharedHead(seq=int(row[0]), hash=str(row[1]), key_id=row[2], mac=row[3])


def read_head(conn: psycopg.Connection[Any]) -> SharedHead | None:
    row = conn.execute("SELECT seq, hash, key_id, mac FROM audit_head WHERE id = 1").fetchone()
    return None if row is None else SharedHead(seq=int(row[0]), hash=str(row[1]), key_id=row[2], mac=row[3])


def last_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT seq FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
    return 0 if row is None else int(row[0])


def set_head(conn: psycopg.Connection[Any], seq: int, head_hash: str, mac: str) -> None:
    conn.execute("UPDATE audit_head SET seq = %s, hash = %s, mac = %s WHERE id = 1", (seq, head_hash, mac))


def checkpoints(conn: psycopg.Connection[Any]) -> list[Checkpoint]:
    """Every checkpoint, by id. Raises ``ValueError`` for a malformed row."""
    rows = conn.execute(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints ORDER BY id").fetchall()
    return [Checkpoint.from_mapping(dict(zip(CHECKPOINT_COLUMNS, row, strict=True))) for row in rows]


def last_checkpoint(conn: psycopg.Connection[Any]) -> Checkpoint | None:
    row = conn.execute(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else Checkpoint.from_mapping(dict(zip(CHECKPOINT_COLUMNS, row, strict=True)))


def records_from(conn: psycopg.Connection[Any], seq: int, *, batch: int = 2000) -> Iterator[tuple[Any, ...]]:
    """Records with ``seq`` >= the given one, in order, fetched in batches (a server-side
    cursor: the log can be large). Needs an open transaction."""
    with conn.cursor(name="audit_walk") as cursor:
        cursor.itersize = batch
        cursor.execute(f"{SELECT_RECORDS} WHERE seq >= %s ORDER BY seq", (seq,))
        yield from cursor
