"""LISTEN/NOTIFY between instances (engine.pg.listen/notify) on a real server: every
listener gets each notification, in order; leaving the block stops the listening thread
and closes its connection; a lost connection ends the iteration with PgUnavailableError;
bad channel names and oversized payloads are refused."""

from __future__ import annotations

import psycopg
import pytest
import trio

from engine.pg import Database, PgUnavailableError, listen, notify


async def test_every_listener_gets_every_notification_in_order(pg_url: str) -> None:
    db = await Database.open(pg_url, max_size=2)
    try:
        async with listen(pg_url, ["approvals", "control"]) as first, listen(pg_url, ["approvals"]) as second:
            for i in range(5):
                await notify(db, "approvals", f"decided:{i}")
            await notify(db, "control", "stop:s1")
            with trio.fail_after(20):
                got_first = [(n.channel, n.payload) for n in [await first.receive() for _ in range(6)]]
                got_second = [(n.channel, n.payload) for n in [await second.receive() for _ in range(5)]]
        assert got_first == [("approvals", f"decided:{i}") for i in range(5)] + [("control", "stop:s1")]
        assert got_second == [("approvals", f"decided:{i}") for i in range(5)]
        with trio.fail_after(20):  # the listeners' connections are closed once the blocks are left
            while await trio.to_thread.run_sync(_listeners, pg_url):  # noqa: ASYNC110 (the server's view: no event)
                await trio.sleep(0.05)
    finally:
        await db.aclose()


async def test_a_lost_connection_ends_the_iteration_with_an_error(pg_url: str) -> None:
    with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012 - the error surfaces when the block is left
        with trio.fail_after(20):
            async with listen(pg_url, ["approvals"]) as incoming:
                await trio.to_thread.run_sync(_terminate_listeners, pg_url)
                async for _ in incoming:
                    raise AssertionError("nothing was sent")
    assert caught.group_contains(PgUnavailableError, match="listening connection was lost")


async def test_bad_channels_and_payloads_are_refused(pg_url: str) -> None:
    db = await Database.open(pg_url, max_size=1)
    try:
        for channel in ("", "a b", 'x"; DROP TABLE t; --', "é", "c" * 64):
            with pytest.raises(ValueError, match="channel"):
                await notify(db, channel, "x")
            with pytest.raises(ValueError, match="channel"):
                async with listen(pg_url, [channel]):
                    pass
        with pytest.raises(ValueError, match="at most"):
            await notify(db, "approvals", "x" * 8000)
    finally:
        await db.aclose()


_LISTENERS = "FROM pg_stat_activity WHERE application_name = 'sconnect-listen'"


def _listeners(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) {_LISTENERS}").fetchone()
        return int(row[0]) if row else 0


def _terminate_listeners(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) {_LISTENERS}")
