"""``sconnect db migrate [--dry-run]``: bring the shared database's schema up to date.

The server applies its migrations itself at start (under an advisory lock, so instances
starting together apply each once); this command lets an operator see what a new version
would change before rolling it out (``--dry-run`` prints each pending migration and its
SQL, changing nothing) or apply it ahead of the rollout.

The database is ``SCONNECT_DATABASE_URL``, else ``database_url`` in the settings file
(``--server-config``, else ``<config>/sconnect.yaml``). Without one, the state is SQLite in
``--state-dir``: the command reports its schema version (the server migrates it at start).

Exit codes: 0 done (or nothing to do), 2 no database, unreachable, wrong password, or a
schema newer than this program.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError


def register(commands: Any) -> None:
    from .main import add_config_option, add_state_option

    parser = commands.add_parser("db", help="the state database: schema migrations")
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    migrating = sub.add_parser("migrate", help="apply pending schema migrations (--dry-run: only print them)")
    add_config_option(migrating)
    add_state_option(migrating)
    migrating.add_argument("--server-config", metavar="FILE",
                           help="settings file naming database_url (default: <config>/sconnect.yaml if present)")
    migrating.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")
    migrating.set_defaults(run=run_migrate)


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
