"""``sconnect db migrate`` as an operator runs it: --dry-run prints the pending migrations
and changes nothing; a run applies them once; a second says up to date; an unreachable
database or a wrong password exits 2 with one line, never the password; without a
database URL it reports the SQLite state's version."""

from __future__ import annotations

import psycopg

from tests.pg.cluster import PASSWORD
from tests.security.cliserver import place, sconnect


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


async def test_dry_run_then_migrate_then_up_to_date(pg_url: str) -> None:
    env = {"SCONNECT_DATABASE_URL": pg_url}
    dry = await sconnect("db", "migrate", "--dry-run", env=env)
    assert dry.code == 0, dry.stderr
    assert "store: would apply 1: sessions, their messages, pending actions" in dry.stdout
    assert "CREATE TABLE pending_actions" in dry.stdout
    assert _tables(pg_url) == set()  # nothing changed
    done = await sconnect("db", "migrate", env=env)
    assert done.code == 0 and "store: applied 1:" in done.stdout, done.stderr
    assert {"sessions", "messages", "pending_actions", "schema_migrations"} <= _tables(pg_url)
    again = await sconnect("db", "migrate", "--dry-run", env=env)
    assert again.code == 0 and "store: up to date (version 1)" in again.stdout
    assert PASSWORD not in again.stdout


async def test_wrong_password_and_newer_schema_exit_2(pg_url: str) -> None:
    wrong = {"SCONNECT_DATABASE_URL": pg_url.replace(PASSWORD, "nope-42")}
    bad = await sconnect("db", "migrate", "--dry-run", env=wrong)
    assert bad.code == 2 and "password authentication failed" in bad.stderr
    assert "nope-42" not in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    assert (await sconnect("db", "migrate", env={"SCONNECT_DATABASE_URL": pg_url})).code == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('store', 2, 'future', 0)")
    newer = await sconnect("db", "migrate", "--dry-run", env={"SCONNECT_DATABASE_URL": pg_url})
    assert newer.code == 2 and "newer than this program's (1)" in newer.stderr, newer.stderr


async def test_database_url_from_the_settings_file(pg_url: str) -> None:
    with place() as where:
        (where.config / "sconnect.yaml").write_text(f"database_url: {pg_url}\n")
        done = await sconnect("db", "migrate", "--config", str(where.config))
        assert done.code == 0 and "store: applied 1" in done.stdout, done.stderr


async def test_without_a_database_url_reports_the_sqlite_state() -> None:
    with place() as where:
        done = await sconnect("db", "migrate", "--dry-run", "--config", str(where.config),
                              "--state-dir", str(where.state))
        assert done.code == 0 and "the server creates it at start" in done.stdout, done.stderr
