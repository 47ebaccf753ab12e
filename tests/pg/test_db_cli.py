"""``sconnect db migrate`` as an operator runs it: --dry-run prints the pending migrations
and changes nothing; a run applies them once; a second says up to date; an unreachable
database or a wrong password exits 2 with one line, never the password; without a
database URL it reports the SQLite state's version. ``sconnect db copy`` moves a SQLite
state into PostgreSQL intact."""

from __future__ import annotations

import psycopg

from engine.store import Store
from engine.store._pg import MIGRATIONS
from tests.pg.cluster import PASSWORD
from tests.security.cliserver import place, sconnect

T0 = 1_700_000_000.0


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


async def test_dry_run_then_migrate_then_up_to_date(pg_url: str) -> None:
    env = {"SCONNECT_DATABASE_URL": pg_url}
    dry = await sconnect("db", "migrate", "--dry-run", env=env)
    assert dry.code == 0, dry.stderr
    assert "store: would apply 1: sessions, their messages, pending actions" in dry.stdout
    assert "CREATE TABLE pending_actions" in dry.stdout
    assert "store: would apply 2: pending actions name the instance that waits for them" in dry.stdout
    assert _tables(pg_url) == set()  # nothing changed
    done = await sconnect("db", "migrate", env=env)
    assert done.code == 0 and "store: applied 1:" in done.stdout and "store: applied 2:" in done.stdout, done.stderr
    assert {"sessions", "messages", "pending_actions", "schema_migrations"} <= _tables(pg_url)
    again = await sconnect("db", "migrate", "--dry-run", env=env)
    assert again.code == 0 and f"store: up to date (version {MIGRATIONS[-1].version})" in again.stdout
    assert PASSWORD not in again.stdout


async def test_wrong_password_and_newer_schema_exit_2(pg_url: str) -> None:
    wrong = {"SCONNECT_DATABASE_URL": pg_url.replace(PASSWORD, "nope-42")}
    bad = await sconnect("db", "migrate", "--dry-run", env=wrong)
    assert bad.code == 2 and "password authentication failed" in bad.stderr
    assert "nope-42" not in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    assert (await sconnect("db", "migrate", env={"SCONNECT_DATABASE_URL": pg_url})).code == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('store', %s, 'future', 0)", (MIGRATIONS[-1].version + 1,))
    newer = await sconnect("db", "migrate", "--dry-run", env={"SCONNECT_DATABASE_URL": pg_url})
    assert newer.code == 2 and f"newer than this program's ({MIGRATIONS[-1].version})" in newer.stderr, newer.stderr


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


async def test_copy_a_sqlite_state_to_postgresql(pg_url: str) -> None:
    """What a SQLite server stored reads back the same from PostgreSQL; a pending approval
    arrives cancelled; a second copy (a target with state) and bad sources exit 2."""
    env = {"SCONNECT_DATABASE_URL": pg_url}
    with place() as where:
        where.state.mkdir()
        key = b"K" * 32
        async with await Store.open(where.state / "sconnect.db", digest_key=key) as lite:
            await lite.create_session("s1", "alice", "assistant", now=T0)
            await lite.create_session("s2", "bob", "assistant", now=T0 + 1)
            for i in range(3):
                await lite.append_message("s1", {"role": "user", "content": f"m{i} ü"})
            done_action = await lite.add_pending_action(
                session_id="s1", subject="alice", kind="tool", name="pay", arguments={"pin": "4711", "to": "x"},
                secret=["pin"], level=2, approver="admin", expires_at=T0 + 60, now=T0)
            assert await lite.decide_action(done_action.action_id, "approved", "root", "ok", now=T0 + 2)
            waiting = await lite.add_pending_action(
                session_id=None, subject="bob", kind="resource", name="files://a", arguments={}, level=1,
                approver="user", expires_at=T0 + 9e9, now=T0)
            sessions = [await lite.get_session("s1"), await lite.get_session("s2")]
            history = await lite.messages("s1")
            decided = await lite.get_action(done_action.action_id)
        copied = await sconnect("db", "copy", "--from", f"sqlite:{where.state}", env=env)
        assert copied.code == 0, copied.stderr
        assert "copied 2 sessions, 3 messages, 2 approvals" in copied.stdout
        async with await Store.connect(pg_url, digest_key=key) as pg:
            assert [await pg.get_session("s1"), await pg.get_session("s2")] == sessions
            assert await pg.messages("s1") == history
            again = await pg.get_action(done_action.action_id)
            assert again == decided and again is not None
            assert pg.matches(again, {"pin": "4711", "to": "x"})  # same key: the digest still proves it
            moved = await pg.get_action(waiting.action_id)
            assert moved is not None and moved.status == "cancelled"
            assert await pg.append_message("s1", {"role": "user", "content": "next"}) == 4
        twice = await sconnect("db", "copy", "--from", f"sqlite:{where.state}", env=env)
        assert twice.code == 2 and "already holds sessions" in twice.stderr, twice.stderr
        for bad, message in ((f"{where.state}", "write sqlite:PATH"), (f"sqlite:{where.base}/none", "no SQLite state"),
                             (f"sqlite:{where.config}/sconnect.yaml", "no SQLite state")):
            refused = await sconnect("db", "copy", "--from", bad, env=env)
            assert refused.code == 2 and message in refused.stderr, (bad, refused.stderr)
        (where.base / "junk.db").write_bytes(b"not a database at all" * 100)
        junk = await sconnect("db", "copy", "--from", f"sqlite:{where.base}/junk.db", env=env)
        assert junk.code == 2 and "not a state database" in junk.stderr and "Traceback" not in junk.stderr
