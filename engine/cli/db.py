"""``sconnect db migrate [--dry-run]``: bring the shared database's schema up to date;
``sconnect db copy --from sqlite:PATH``: move a SQLite state to PostgreSQL.

The server applies its migrations itself at start (under an advisory lock, so instances
starting together apply each once); this command lets an operator see what a new version
would change before rolling it out (``--dry-run`` prints each pending migration and its
SQL, changing nothing) or apply it ahead of the rollout.

The database is ``SCONNECT_DATABASE_URL``, else ``database_url`` in the settings file
(``--server-config``, else ``<config>/sconnect.yaml``). Without one, the state is SQLite in
``--state-dir``: the command reports its schema version (the server migrates it at start).

``copy`` reads the SQLite state database (``PATH``: the ``sconnect.db`` file or the state
directory holding it) in one read transaction — stop the server first — and writes
sessions, their messages, the approvals, memories, turns and ratings into the PostgreSQL database in one
transaction, after migrating it. The target must hold no state yet (copying twice would
mix two histories). Approvals still pending are copied as ``cancelled``: nobody waits for
them any more (what a SQLite server does to them at its next start). Their arguments'
digests are keyed by the audit key: keep using the same key (``SCONNECT_AUDIT_KEY_FILE``).

Exit codes: 0 done (or nothing to do), 2 no database, unreachable, wrong password, a
schema newer than this program, or (copy) a source that is not a state database or a
target that is not empty.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError


def register(commands: Any) -> None:
    from .args import add_config_option, add_state_option

    parser = commands.add_parser("db", help="the state database: schema migrations")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    migrating = sub.add_parser("migrate", help="apply pending schema migrations (--dry-run: only print them)")
    add_config_option(migrating)
    add_state_option(migrating)
    migrating.add_argument("--server-config", metavar="FILE",
                           help="settings file naming database_url (default: <config>/sconnect.yaml if present)")
    migrating.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")
    migrating.set_defaults(run=run_migrate)
    copying = sub.add_parser("copy", help="copy a SQLite state (sessions, history, approvals) into the PostgreSQL "
                             "database (stop the server first)")
    add_config_option(copying)
    copying.add_argument("--server-config", metavar="FILE",
                         help="settings file naming database_url (default: <config>/sconnect.yaml if present)")
    copying.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                         help="the SQLite state: its sconnect.db file or the state directory")
    copying.set_defaults(run=run_copy)


def _database_url(args: argparse.Namespace) -> str | None:
    if os.environ.get("SCONNECT_DATABASE_URL"):
        return os.environ["SCONNECT_DATABASE_URL"]
    from ..config.paths import resolve_config_dir
    from ..server.options import read_server_file

    server_file = args.server_config or os.environ.get("SCONNECT_SERVER_CONFIG")
    if server_file is None:
        candidate = resolve_config_dir(args.config) / "sconnect.yaml"
        server_file = str(candidate) if candidate.is_file() else None
    if server_file is None:
        return None
    url = read_server_file(Path(server_file)).get("database_url")
    return url if isinstance(url, str) else None


def run_migrate(args: argparse.Namespace) -> int:
    url = _database_url(args)
    if url is None:
        return _sqlite_status(Path(args.state_dir))
    from ..pg import describe, is_postgres_url
    from ..pg import migrate as apply
    from ..pg import pending as pending_of
    from ..pg._database import connect_once
    from ..store import PG_COMPONENTS

    if not is_postgres_url(url):
        raise UsageError("database_url: a PostgreSQL URL starts with postgresql://")
    with connect_once(url, "sconnect-db") as conn:
        for component, migrations in PG_COMPONENTS:
            todo = pending_of(conn, component, migrations)
            if not todo:
                print(f"{component}: up to date (version {len(migrations)}) on {describe(url)}")
                continue
            if args.dry_run:
                for migration in todo:
                    print(f"{component}: would apply {migration.version}: {migration.description}")
                    print("\n".join("    " + line.strip() for line in migration.sql.strip().splitlines()
                                    if line.strip()))
                continue
            for migration in apply(conn, component, migrations):
                print(f"{component}: applied {migration.version}: {migration.description}")
    return 0


def _sqlite_status(state_dir: Path) -> int:
    import sqlite3

    from ..server.settings import DATABASE_NAME
    from ..store import SCHEMA_VERSION

    path = state_dir / DATABASE_NAME
    if not path.is_file():
        print(f"no database_url and no SQLite state at {path}: the server creates it at start")
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
    if version > SCHEMA_VERSION:
        print(f"sconnect: {path}: schema version {version} is newer than this program's ({SCHEMA_VERSION})",
              file=sys.stderr)
        return 2
    state = "up to date" if version == SCHEMA_VERSION else f"at version {version}; the server migrates it at start"
    print(f"SQLite {path}: {state} (this program: version {SCHEMA_VERSION})")
    return 0


_TABLES = (
    ("sessions", "session_id, subject, agent, state, created_at, updated_at"),
    ("messages", "session_id, seq, message, created_at"),
    ("pending_actions", "action_id, session_id, turn_id, subject, kind, name, arguments, arguments_digest, level, "
                        "approver, created_at, expires_at, status, decided_by, decided_at, reason"),
    ("memories", "memory_id, subject, agent, content, session_id, created_at"),
    ("turns", "turn_id, session_id, subject, agent, model, tools, question, answer, created_at"),
    ("feedback", "turn_id, subject, agent, model, tools, rating, comment, created_at"),
)


def _read_sqlite(source: str) -> dict[str, list[tuple[Any, ...]]]:
    import sqlite3

    from ..server.settings import DATABASE_NAME
    from ..store import SCHEMA_VERSION

    if not source.startswith("sqlite:"):
        raise UsageError(f"--from {source!r}: write sqlite:PATH (the state directory or its {DATABASE_NAME})")
    path = Path(source.removeprefix("sqlite:"))
    if path.is_dir():
        path = path / DATABASE_NAME
    if not path.is_file():
        raise UsageError(f"--from: no SQLite state database at {path}")
    try:
        # Read-write at the file level (a read-only open of a WAL database fails when its -shm
        # file is absent, as after a crash), but only ever SELECTs.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        raise UsageError(f"--from: cannot open {path}: {exc}") from None
    try:
        conn.execute("BEGIN")  # one snapshot of the three tables
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise UsageError(f"--from {path}: schema version {version}, this program copies version {SCHEMA_VERSION}"
                             + ("; start the server on it once to migrate it" if version < SCHEMA_VERSION else ""))
        rows = {table: conn.execute(f"SELECT {columns} FROM {table}").fetchall()  # noqa: S608 - fixed names
                for table, columns in _TABLES}
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--from {path}: not a state database ({exc})") from None
    finally:
        conn.close()
    return rows


def run_copy(args: argparse.Namespace) -> int:
    import time

    from ..pg import describe, is_postgres_url
    from ..pg import migrate as apply
    from ..pg._database import connect_once
    from ..store import PG_COMPONENTS

    url = _database_url(args)
    if url is None or not is_postgres_url(url):
        raise UsageError("copy needs the PostgreSQL database: SCONNECT_DATABASE_URL or database_url in sconnect.yaml")
    rows = _read_sqlite(args.source)
    at = time.time()
    status = _TABLES[2][1].split(", ").index("status")
    actions = []
    for row in rows["pending_actions"]:
        if row[status] == "pending":  # nobody waits for it any more: as a SQLite server's next start would
            row = (*row[:status], "cancelled", None, at, "moved to PostgreSQL before it was answered")
        actions.append(row)
    rows["pending_actions"] = actions
    with connect_once(url, "sconnect-db") as conn:
        for component, migrations in PG_COMPONENTS:
            apply(conn, component, migrations)
        with conn.transaction():
            for table, _columns in _TABLES:
                # Locks out a concurrent copy too; a non-empty target would mix two histories.
                conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE".encode())
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1".encode()).fetchone():
                    raise UsageError(f"{describe(url)} already holds {table}: copy only into a database "
                                     "with no state yet")
            with conn.cursor() as cursor:
                for table, columns in _TABLES:
                    marks = ", ".join(["%s"] * len(columns.split(", ")))
                    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})".encode(), rows[table])
    print(f"copied {len(rows['sessions'])} sessions, {len(rows['messages'])} messages, "
          f"{len(rows['pending_actions'])} approvals, {len(rows['memories'])} memories, {len(rows['turns'])} turns, "
          f"{len(rows['feedback'])} ratings to {describe(url)}")
    return 0
