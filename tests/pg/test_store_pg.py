"""The state store on PostgreSQL, beyond what tests/engine/test_store.py runs on both
backends: several stores (as several instances) on one database, migrations applied once
under concurrent starts, a schema newer than the code, a Trio cancellation turned into a
server-side cancel, a database that is down or refuses the password, secrets kept out of
the tables."""

from __future__ import annotations

import contextlib

import psycopg
import pytest
import trio

from engine.store import SchemaVersionError, Store, StoreUnavailableError
from engine.store._pg import MIGRATIONS
from tests.pg.cluster import PASSWORD, Cluster

T0 = 1_700_000_000.0
LATEST = MIGRATIONS[-1].version


async def test_concurrent_starts_apply_each_migration_once(pg_url: str) -> None:
    stores: list[Store] = []

    async def start() -> None:
        stores.append(await Store.connect(pg_url, max_connections=2))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(start)
    try:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT component, version FROM schema_migrations").fetchall()
        assert sorted(rows) == [("store", m.version) for m in MIGRATIONS]
        await stores[0].create_session("s1", "alice", "assistant")
        assert all([await s.get_session("s1") is not None for s in stores])
    finally:
        for store in stores:
            await store.aclose()


async def test_newer_schema_refused(pg_url: str) -> None:
    async with await Store.connect(pg_url):
        pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('store', %s, 'from the future', 0)", (LATEST + 1,))
    with pytest.raises(SchemaVersionError,
                       match=f"version {LATEST + 1}, newer than this program's .{LATEST}.*refusing to start"):
        await Store.connect(pg_url)


async def test_wrong_password_is_a_clear_error_without_the_password(pg_url: str) -> None:
    bad = pg_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreUnavailableError, match="password authentication failed") as caught:
        await Store.connect(bad)
    assert "not-the-password" not in str(caught.value) and PASSWORD not in str(caught.value)


async def test_database_down_is_a_clear_error(pg_url: str) -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on: bound, never listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        down = f"postgresql://sconnect_test:{PASSWORD}@127.0.0.1:{port}/nothing"
        with pytest.raises(StoreUnavailableError, match=f"cannot connect to PostgreSQL sconnect_test@127.0.0.1:{port}"):
            await Store.connect(down)


async def test_two_stores_decide_once_and_append_without_gaps(pg_url: str) -> None:
    async with await Store.connect(pg_url) as a, await Store.connect(pg_url) as b:
        await a.create_session("s1", "alice", "assistant", now=T0)
        action = await a.add_pending_action(session_id="s1", subject="alice", kind="tool", name="shell",
                                            arguments={"cmd": "ls"}, level=1, approver="user",
                                            expires_at=T0 + 3600, now=T0)
        wins: list[str] = []

        async def decide(store: Store, who: str) -> None:
            if await store.decide_action(action.action_id, "approved", who, now=T0 + 1):
                wins.append(who)

        async def append(store: Store, tag: str) -> None:
            for i in range(10):
                await store.append_message("s1", {"role": "user", "content": f"{tag}{i}"})

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(decide, (a, b)[i % 2], f"admin{i}")
            nursery.start_soon(append, a, "a")
            nursery.start_soon(append, b, "b")
        assert len(wins) == 1
        history = [m["content"] for m in await b.messages("s1")]
        assert sorted(history) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
        assert [h for h in history if h[0] == "a"] == [f"a{i}" for i in range(10)]
        with psycopg.connect(pg_url) as conn:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY seq")]
        assert seqs == list(range(1, 21))
        # Expiry on two stores at once reports each action once.
        for i in range(3):
            await a.add_pending_action(session_id="s1", subject="alice", kind="tool", name="shell",
                                       arguments={"i": i}, level=1, approver="user", expires_at=T0 + 5, now=T0)
        reported: list[str] = []

        async def expire(store: Store) -> None:
            reported.extend(x.action_id for x in await store.expire_actions(T0 + 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expire, a)
            nursery.start_soon(expire, b)
        assert len(reported) == len(set(reported)) == 3


async def test_cancellation_cancels_the_statement_and_the_pool_stays_usable(pg_url: str) -> None:
    """A statement waits on a row lock another connection holds; cancelling the Trio scope
    must end it server-side (the lock is still held, so only a cancel can end it), leave
    nothing changed, and the store must work afterwards."""
    async with await Store.connect(pg_url, max_connections=1) as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        with psycopg.connect(pg_url) as holder:
            holder.execute("SELECT * FROM sessions WHERE session_id = 's1' FOR UPDATE")
            with trio.CancelScope() as scope:
                async def cancel_when_blocked() -> None:
                    for _ in range(500):  # bounded: ~ 500 polls of pg_stat_activity
                        if await trio.to_thread.run_sync(_waiting_on_lock, pg_url):
                            scope.cancel()
                            return
                        await trio.sleep(0.01)
                    raise AssertionError("the store's statement never waited on the lock")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_when_blocked)
                    await store.set_session_state("s1", "paused", now=T0 + 1)
            assert scope.cancelled_caught
            holder.rollback()
        session = await store.get_session("s1")  # the only pooled connection still works
        assert session is not None and session.state == "initialized"
        await store.set_session_state("s1", "paused", now=T0 + 2)


def _waiting_on_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sconnect-store' "
                           "AND wait_event_type = 'Lock'").fetchone()
        return bool(row and row[0])


async def test_secret_arguments_never_reach_the_tables(pg_url: str) -> None:
    async with await Store.connect(pg_url, digest_key=b"K" * 32) as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        arguments = {"to": "acct-7", "pin": "4711"}
        action = await store.add_pending_action(
            session_id="s1", subject="alice", kind="tool", name="pay", arguments=arguments, level=2,
            approver="admin", expires_at=T0 + 60, secret=["pin"], now=T0)
        assert store.matches(action, arguments)
        await store.append_message("s1", {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": {"pin": "4711"}}}]},
            secret={"pay": ["pin"]})
    with psycopg.connect(pg_url) as conn:
        dump = " ".join(str(row) for table in ("sessions", "messages", "pending_actions")
                        for row in conn.execute(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
    assert "acct-7" in dump and "4711" not in dump


@pytest.mark.slow
async def test_database_going_away_fails_calls_then_recovers(own_cluster: Cluster) -> None:
    """The server stops under an open store: calls fail with StoreUnavailableError (the
    store says it is unavailable, for /readyz); once the server is back, calls work
    again on fresh connections (after the pool's reconnect back-off) and nothing was
    half-written."""
    url = own_cluster.create_database()
    async with await Store.connect(url) as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        await trio.to_thread.run_sync(own_cluster.pg_ctl, "stop", "-m", "fast")
        with pytest.raises(StoreUnavailableError, match="unavailable|cannot connect|no connection"):
            await store.append_message("s1", {"role": "user", "content": "while down"})
        assert not store.available
        await trio.to_thread.run_sync(own_cluster.pg_ctl, "start")
        # The pool reconnects with a back-off: wait for that event (a ping that succeeds).
        for _ in range(20):  # bounded: each failing ping takes at most the pool's 3 s wait
            with contextlib.suppress(StoreUnavailableError):
                await store.ping()
                break
        assert await store.append_message("s1", {"role": "user", "content": "back"}) == 1
        assert store.available
        assert [m["content"] for m in await store.messages("s1")] == ["back"]


async def test_a_restart_cancels_only_its_own_orphaned_approvals(pg_url: str) -> None:
    """Two instances share the database; one restarts and cancels what it left pending,
    never the other's live approvals (nor those written without an instance)."""
    async with await Store.connect(pg_url, instance="a") as a, await Store.connect(pg_url, instance="b") as b, \
            await Store.connect(pg_url) as anonymous:
        fields = dict(session_id=None, subject="alice", kind="tool", name="shell", arguments={}, level=1,
                      approver="user", expires_at=T0 + 3600, now=T0)
        mine = [(await a.add_pending_action(**fields)).action_id for _ in range(2)]  # type: ignore[arg-type]
        theirs = (await b.add_pending_action(**fields)).action_id  # type: ignore[arg-type]
        unnamed = (await anonymous.add_pending_action(**fields)).action_id  # type: ignore[arg-type]
    async with await Store.connect(pg_url, instance="a") as restarted:
        assert await restarted.cancel_pending_actions("restarted", now=T0 + 1) == 2
        for action_id, status in [(mine[0], "cancelled"), (mine[1], "cancelled"), (theirs, "pending"),
                                  (unnamed, "pending")]:
            action = await restarted.get_action(action_id)
            assert action is not None and action.status == status, (action_id, status)
