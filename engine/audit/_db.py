"""The audit database: its file, schema, and how the writer and the readers open it.

``<state>/audit.db``, separate from the state database so that its retention, backup and
permissions can differ and so that no code path of the engine's ordinary state can touch
it. WAL journaling (readers — ``sconnect audit`` while the server runs — never block the
writer), ``synchronous=FULL``: a record is reported committed only once it is on disk,
because the server sends an action's result only after its record is committed. Group
commits make that fsync cheap per record.

Two tables, both append-only by trigger (``RAISE(ABORT)`` on UPDATE and DELETE). The
triggers stop mistakes and ordinary SQL clients; someone with write access to the file
can drop them, which is what the hash chain and the HMAC'd checkpoints are for.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Final

from ..sqlite import BUSY_TIMEOUT_MS, connect, split_statements, transaction
from ._errors import AuditError, AuditNotFoundError

AUDIT_DB_NAME: Final = "audit.db"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE audit_records (
    seq              INTEGER PRIMARY KEY,   -- 1, 2, 3 ... no gaps; hashed
    version          INTEGER NOT NULL,      -- record format (FORMAT_VERSION)
    time             REAL NOT NULL,         -- UTC epoch seconds, microsecond precision
    time_iso         TEXT NOT NULL,         -- the same instant, 2025-01-31T12:00:00.123456Z
    kind             TEXT NOT NULL,
    subject          TEXT,
    session_id       TEXT,
    agent            TEXT,
    action           TEXT,
    target           TEXT,
    arguments        TEXT,                  -- canonical JSON, secret fields redacted
    arguments_digest TEXT,                  -- keyed digest (HMAC) of the UNredacted canonical arguments
    decision         TEXT,                  -- canonical JSON {effect, rule_ids}
    decided_by       TEXT,                  -- 'rule' | 'person'
    approver         TEXT,                  -- the person's sub
    outcome          TEXT,
    duration_ms      REAL,
    policy_revision  TEXT,
    details          TEXT NOT NULL,         -- canonical JSON object
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX audit_records_by_time ON audit_records (time);
CREATE INDEX audit_records_by_subject ON audit_records (subject, time);
CREATE INDEX audit_records_by_target ON audit_records (target, time);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused'); END;

CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,   -- 1, 2, 3 ...
    time       REAL NOT NULL,
    time_iso   TEXT NOT NULL,
    seq        INTEGER NOT NULL,      -- the head at that moment (0: empty log)
    head_hash  TEXT NOT NULL,         -- the hash of the record at seq
    reason     TEXT NOT NULL,         -- 'open' | 'periodic' | 'shutdown'
    prev_mac   TEXT NOT NULL,         -- the previous checkpoint's mac (chain)
    mac        TEXT NOT NULL          -- HMAC-SHA256 under the key outside this database
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: UPDATE refused'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only: DELETE refused'); END;
"""


log = logging.getLogger(__name__)


def audit_db_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / AUDIT_DB_NAME


def connect_writer(path: Path) -> sqlite3.Connection:
    """Open (creating 0600 if needed) and migrate the database for the single writer.
    Audit records name subjects and arguments: the file is private (engine.sqlite)."""
    conn = connect(path, synchronous="FULL", error=AuditError)
    try:
        with transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AuditError(f"{path}: audit schema version {version} is newer than this "
                                 f"program's ({SCHEMA_VERSION}); upgrade Scalytics Connect")
            if version == 0:
                for statement in split_statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            else:
                _restore_triggers(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _restore_triggers(conn: sqlite3.Connection, path: Path) -> None:
    """Put back append-only triggers someone dropped, and say so: that was tampering, or an attempt."""
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    for statement in split_statements(_SCHEMA):
        name = statement.split()[2] if statement.lstrip().upper().startswith("CREATE TRIGGER") else None
        if name is not None and name not in present:
            log.error("%s: the append-only trigger %s was missing (dropped by someone with file access); "
                      "restored. Run `sconnect audit verify` now.", path, name)
            conn.execute(statement)


def connect_reader(state_dir: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open an existing audit database for reading; never creates one.

    Opened read-write at the file level (a read-only open of a WAL database fails when
    its ``-shm`` file is absent), but only ever SELECTs. Raises
    :class:`AuditNotFoundError` when there is no audit log.
    """
    path = audit_db_path(state_dir)
    if not path.is_file():
        raise AuditNotFoundError(f"no audit log at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path}: cannot read the audit database: {exc}") from None
    if "audit_records" not in tables:
        conn.close()
        raise AuditError(f"{path}: not an audit database (no audit_records table)")
    return conn
