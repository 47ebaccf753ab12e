"""SQLite setup shared by the state database (``engine.store``) and the audit log
(``engine.audit``): private file creation, WAL, timeouts, transactions, schema scripts.

Both databases are opened the same way — created 0600 before SQLite touches them (SQLite
gives its ``-wal`` and ``-shm`` files the database file's mode), autocommit mode
(``isolation_level=None``: transactions are explicit), a busy timeout so that another
process holding the write lock makes us wait rather than fail, and WAL journaling so
that readers never block the writer. They differ only in ``synchronous`` (the audit log
needs FULL: a record is reported committed only once it is on disk) and in what runs
after connecting (schema creation, migrations), which stays with each owner.

Errors: :func:`connect` raises ``sqlite3.Error`` from SQLite, or the ``error`` type the
caller passes when WAL cannot be used on that file system; it closes the connection
before raising.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = ["BUSY_TIMEOUT_MS", "connect", "create_private", "split_statements", "transaction"]

#: How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_MS: Final = 5000


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (no race with another creator)."""
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # created meanwhile by another process: fine


def connect(path: Path, *, synchronous: str, error: type[Exception], foreign_keys: bool = False) -> sqlite3.Connection:
    """Open (creating 0600 if needed) ``path`` in WAL mode with explicit transactions.

    ``synchronous`` is ``NORMAL`` or ``FULL``. The connection may be used from any one
    thread at a time (``check_same_thread=False``); callers serialise it themselves.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    create_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise error(f"{path}: cannot use WAL journaling here (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so a read-then-write cannot interleave with
    another writer, in this process or another.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT may have rolled back already
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, split where SQLite sees a statement end (a ``;``
    inside a trigger body, a comment or a string does not end one). Raises
    ``ValueError`` if the script ends in an incomplete statement."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current)
            current = ""
    if current.strip():
        raise ValueError(f"the SQL script ends with an incomplete statement: {current.strip()[:60]!r}")
    return out
