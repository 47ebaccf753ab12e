"""Memories, turns and ratings in the state store, on both backends (SQLite on a real file,
PostgreSQL on the suite's throwaway cluster): scoping by subject, the quota, retention,
one rating per turn, examples and statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from engine.store import MemoryQuotaError, Store
from tests.engine.test_store import Where

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "sqlite":
        return Where(path=tmp_path / "state.db")
    return Where(url=request.getfixturevalue("pg_url"))


async def test_memories_are_scoped_to_their_subject(where: Where) -> None:
    async with await where.open() as store:
        mine, new = await store.remember("alice", "assistant", "likes tea", max_items=5, now=T0)
        assert new
        again, new = await store.remember("alice", "assistant", "likes tea", max_items=5, now=T0 + 1)
        assert not new and again.memory_id == mine.memory_id
        await store.remember("bob", "assistant", "likes coffee", max_items=5, now=T0)
        await store.remember("alice", "planner", "lives in Paris", max_items=5, now=T0 + 2)
        assert [m.content for m in await store.memories("alice", "assistant")] == ["likes tea"]
        assert [m.content for m in await store.memories("alice")] == ["likes tea", "lives in Paris"]
        # Bob's id, asked for by alice: nothing goes.
        bobs = (await store.memories("bob"))[0]
        assert await store.forget("alice", memory_id=bobs.memory_id) == 0
        assert [m.content for m in await store.memories("bob")] == ["likes coffee"]
        assert await store.forget("alice", agent="planner") == 1
        assert await store.forget("alice") == 1
        assert await store.memories("alice") == ()


async def test_quota_holds_under_concurrent_writers(where: Where) -> None:
    async with await where.open() as store:
        refused: list[str] = []

        async def write(i: int) -> None:
            try:
                await store.remember("alice", "assistant", f"fact {i}", max_items=3, now=T0 + i)
            except MemoryQuotaError as exc:
                refused.append(str(exc))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(write, i)
        assert len(await store.memories("alice", "assistant")) == 3
        assert len(refused) == 5 and "the most allowed (3)" in refused[0]


async def test_retention_deletes_and_hides_old_memories(where: Where) -> None:
    async with await where.open() as store:
        await store.remember("alice", "assistant", "old", max_items=2, now=T0)
        await store.remember("alice", "assistant", "older still", max_items=2, now=T0 - 5)
        assert [m.content for m in await store.memories("alice", "assistant", since=T0 - 1)] == ["old"]
        # Full, but the expired one makes room.
        await store.remember("alice", "assistant", "new", max_items=2, expired_before=T0 - 1, now=T0 + 10)
        assert [m.content for m in await store.memories("alice", "assistant")] == ["old", "new"]
        assert [m.content for m in await store.memories("alice", "assistant", limit=1)] == ["new"]
        await store.remember("bob", "assistant", "bob's old", max_items=2, now=T0 - 5)
        await store.remember("bob", "planner", "other agent", max_items=2, now=T0 - 5)
        assert await store.expire_memories("assistant", T0 - 1) == 1
        assert [m.content for m in await store.memories("bob")] == ["other agent"]


async def test_turns_ratings_and_examples(where: Where) -> None:
    async with await where.open() as store:
        for sub in ("alice", "bob"):
            await store.create_session(f"s-{sub}", sub, "assistant", now=T0)
        turns = []
        for i, (sub, model) in enumerate([("alice", "a"), ("alice", "b"), ("bob", "a")]):
            turns.append(await store.record_turn(
                turn_id=f"t{i}", session_id=f"s-{sub}", subject=sub, agent="assistant", model=model,
                tools=("calc", "calc"), question=f"q{i}", answer=f"a{i}", now=T0 + i))
        assert (await store.get_turn("t0")) == turns[0] and turns[0].tools == ("calc",)
        assert await store.get_turn("nope") is None
        assert not await store.rate_turn(turns[0], -1, "wrong", now=T0 + 10)
        assert await store.rate_turn(turns[0], 1, None, now=T0 + 11)  # replaces
        await store.rate_turn(turns[1], -1, now=T0 + 12)
        await store.rate_turn(turns[2], 1, now=T0 + 13)
        with pytest.raises(ValueError):
            await store.rate_turn(turns[2], 0)
        ratings = await store.ratings("assistant")
        assert [(r.turn_id, r.model, r.rating) for r in ratings] == [("t2", "a", 1), ("t1", "b", -1), ("t0", "a", 1)]
        assert [t.turn_id for t in await store.rated_examples("assistant", subject="alice", limit=5)] == ["t0"]
        assert [t.turn_id for t in await store.rated_examples("assistant", subject=None, limit=5)] == ["t0", "t2"]
        assert await store.turn_count("assistant") == 3
        # Pruning the session drops its turns (examples) but keeps the ratings' statistics;
        # old ratings lose who gave them and why.
        assert await store.anonymise_ratings(T0 + 12.5) == 2
        assert await store.anonymise_ratings(T0 + 12.5) == 0
        await store.prune(T0 + 100)
        assert await store.rated_examples("assistant", subject=None, limit=5) == ()
        assert len(await store.ratings("assistant")) == 3


async def test_sqlite_version_1_database_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from engine.store._sqlite import _MIGRATIONS

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[1] + "PRAGMA user_version = 1;")
    conn.close()
    async with await Store.open(path) as store:
        await store.remember("alice", "assistant", "kept", max_items=1)
        assert len(await store.memories("alice")) == 1
