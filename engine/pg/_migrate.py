"""Versioned schema migrations, applied once however many instances start at once.

Each component (the state store, the audit log) keeps its own list of
:class:`Migration` s, numbered 1, 2, 3 ... (append, never edit a shipped one), and its own
row set in ``schema_migrations`` (component, version). :func:`migrate` takes a
transaction-level advisory lock keyed by the component, reads what is applied, and
applies the rest in the same transaction (PostgreSQL DDL is transactional): a second
instance starting at the same moment waits on the lock, then finds nothing left to do.
A database whose schema is newer than the code raises :class:`SchemaTooNewError`
(refuse to start: this code would misread it). :func:`pending` says what would run,
without changing anything (``sconnect db migrate --dry-run``).

Blocking functions: call them in a worker thread (``Database.run``).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._database import PgError

if TYPE_CHECKING:
    import psycopg

_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL,  -- epoch seconds
    PRIMARY KEY (component, version)
)
"""


class SchemaTooNewError(PgError):
    """The database was migrated by a newer version of Scalytics Connect."""


@attrs.frozen
class Migration:
    version: int
    description: str
    sql: str  # statements separated by ';' (none inside a literal; a $$-quoted body may hold them)


def statements(sql: str) -> list[str]:
    """``sql`` split into statements at each ``;`` outside ``$$ ... $$`` (a function's
    body) and outside ``--`` comments (dropped)."""
    pieces, current = [], ""
    for index, part in enumerate(sql.split("$$")):
        if index % 2:  # inside $$ ... $$
            current += "$$" + part + "$$"
            continue
        # Comments go first: a ';' in one must not end a statement.
        first, *rest = re.sub(r"--[^\n]*", "", part).split(";")
        current += first
        for piece in rest:
            pieces.append(current)
            current = piece
    pieces.append(current)
    return [p.strip() for p in pieces if not all(line.strip().startswith("--") or not line.strip()
                                                 for line in p.strip().splitlines())]


def _lock_key(component: str) -> int:
    # A stable signed 32-bit key per component; the class id keeps clear of other users.
    return zlib.crc32(f"sconnect-migrate:{component}".encode()) - 2**31


def _applied(conn: psycopg.Connection[Any], component: str) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = %s",
                       (component,)).fetchone()
    return int(row[0]) if row else 0


def _check(component: str, applied: int, migrations: Sequence[Migration]) -> list[Migration]:
    known = len(migrations)
    if [m.version for m in migrations] != list(range(1, known + 1)):
        raise ValueError(f"{component}: migrations must be numbered 1..{known} in order")
    if applied > known:
        raise SchemaTooNewError(
            f"the {component} schema in the database is at version {applied}, newer than this "
            f"program's ({known}): a newer Scalytics Connect migrated it. Upgrade this instance; "
            "refusing to start")
    return list(migrations[applied:])


def pending(conn: psycopg.Connection[Any], component: str, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations :func:`migrate` would apply now (nothing is changed)."""
    return _check(component, _applied(conn, component), migrations)


def migrate(conn: psycopg.Connection[Any], component: str, migrations: Sequence[Migration]) -> list[Migration]:
    """Bring ``component`` 's schema up to date, under its advisory lock; returns what
    was applied (empty when another instance did it). ``conn`` must be in autocommit
    mode (no transaction open)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(component),))
        conn.execute(_BOOKKEEPING)
        todo = _check(component, _applied(conn, component), migrations)
        for migration in todo:
            for statement in statements(migration.sql):
                conn.execute(statement.encode())
            conn.execute("INSERT INTO schema_migrations (component, version, description, applied_at) "
                         "VALUES (%s, %s, %s, %s)", (component, migration.version, migration.description,
                                                      time.time()))
    return todo
