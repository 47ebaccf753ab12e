"""The state store on both backends — SQLite on real files and PostgreSQL on a real
server (the suite's throwaway cluster): persistence, atomic decisions, expiry, ordering,
secrets. Backend-specific cases (SQLite's file mode and WAL, PostgreSQL's server-side
cancel and shared use by several stores) are named for their backend."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine.canonical import canonical_json, digest
from engine.store import (
    SCHEMA_VERSION,
    DuplicateError,
    SchemaVersionError,
    Store,
    StoreClosedError,
    UnknownSessionError,
)

T0 = 1_700_000_000.0


async def _action(store: Store, **overrides: object) -> str:
    fields: dict[str, object] = dict(
        session_id="s1", subject="alice", kind="tool", name="shell",
        arguments={"cmd": "ls", "path": "/tmp"}, level=1, approver="user",
        expires_at=T0 + 60, now=T0,
    )
    fields.update(overrides)
    return (await store.add_pending_action(**fields)).action_id  # type: ignore[arg-type]


@attrs.frozen
class Where:
    """One database of either backend, to open (and reopen) stores on."""

    path: Path | None = None
    url: str | None = None

    async def open(self, **options: Any) -> Store:
        if self.url is not None:
            return await Store.connect(self.url, **options)
        assert self.path is not None
        return await Store.open(self.path, **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "sqlite":
        return Where(path=tmp_path / "state.db")
    return Where(url=request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(where: Where):  # type: ignore[no-untyped-def]
    async with await where.open() as s:
        await s.create_session("s1", "alice", "assistant", now=T0)
        yield s


async def test_reopen_persists(where: Where) -> None:
    async with await where.open() as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        await store.append_message("s1", {"role": "user", "content": "what is 17*23"})
        await store.append_message("s1", {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "calc", "arguments": "{\"expr\": \"17*23\"}"}}]})
        await store.append_message("s1", {"role": "tool", "tool_call_id": "c1", "name": "calc",
                                          "content": "391"})
        await store.set_session_state("s1", "paused", now=T0 + 5)
        action = await _action(store)
    async with await where.open() as store:
        session = await store.get_session("s1")
        assert session is not None
        assert (session.subject, session.agent, session.state) == ("alice", "assistant", "paused")
        assert session.created_at == T0 and session.updated_at == T0 + 5
        history = await store.messages("s1")
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["tool_calls"][0]["function"]["name"] == "calc"
        assert history[2] == {"role": "tool", "tool_call_id": "c1", "name": "calc",
                              "content": "391"}
        pending = await store.pending_actions("s1")
        assert [a.action_id for a in pending] == [action]
        assert pending[0].arguments == {"cmd": "ls", "path": "/tmp"}
        assert await store.sessions_of("alice") == (session,)
        assert await store.get_session("nope") is None


async def test_database_file_is_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await Store.open(path) as store:
        await store.create_session("s1", "alice", "assistant")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


async def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        await Store.open(path)


async def test_double_decide_returns_false(store: Store) -> None:
    action = await _action(store)
    assert await store.decide_action(action, "approved", "alice", "looks fine", now=T0 + 1)
    assert not await store.decide_action(action, "approved", "alice", now=T0 + 2)
    assert not await store.decide_action(action, "denied", "mallory", now=T0 + 2)
    record = await store.get_action(action)
    assert record is not None
    assert (record.status, record.decided_by, record.decided_at, record.reason) == (
        "approved", "alice", T0 + 1, "looks fine")
    assert not await store.decide_action("no-such-action", "approved", "alice")
    assert await store.pending_actions("s1") == ()


async def test_concurrent_decisions_have_one_winner(store: Store) -> None:
    action = await _action(store)
    wins: list[str] = []

    async def decide(who: str) -> None:
        if await store.decide_action(action, "approved", who, now=T0 + 1):
            wins.append(who)

    async with trio.open_nursery() as nursery:
        for who in ("a", "b", "c", "d", "e"):
            nursery.start_soon(decide, who)
    assert len(wins) == 1
    record = await store.get_action(action)
    assert record is not None and record.decided_by == wins[0]


async def test_expired(store: Store) -> None:
    soon = await _action(store, expires_at=T0 + 10)
    later = await _action(store, expires_at=T0 + 100)
    direct = await _action(store, session_id=None, expires_at=T0 + 5, approver="admin", level=2)
    expired = await store.expire_actions(T0 + 10)
    assert [a.action_id for a in expired] == sorted([soon, direct], key=lambda i: (T0, i))
    assert all(a.status == "expired" and a.decided_at == T0 + 10 for a in expired)
    assert await store.expire_actions(T0 + 10) == ()  # only once
    assert [a.action_id for a in await store.pending_actions()] == [later]
    assert not await store.decide_action(soon, "approved", "alice", now=T0 + 11)


async def test_late_approval_is_refused_and_marks_expired(store: Store) -> None:
    action = await _action(store, expires_at=T0 + 10)
    assert not await store.decide_action(action, "approved", "alice", now=T0 + 10)
    record = await store.get_action(action)
    assert record is not None and record.status == "expired" and record.decided_by is None


async def test_pending_action_filters_and_digest(store: Store) -> None:
    args = {"b": [1, 2], "a": "ü"}
    user = await _action(store, arguments=args)
    admin = await _action(store, session_id=None, approver="admin", level=2, now=T0 + 1)
    record = await store.get_action(user)
    assert record is not None
    assert record.arguments_digest.startswith("hmac-sha256:") and record.arguments_digest != digest(args)
    assert store.matches(record, {"a": "ü", "b": [1, 2]}) and not store.matches(record, {"a": "u", "b": [1, 2]})
    assert canonical_json(args) == '{"a":"ü","b":[1,2]}'
    assert [a.action_id for a in await store.pending_actions(approver="admin")] == [admin]
    assert [a.action_id for a in await store.pending_actions("s1")] == [user]
    assert [a.action_id for a in await store.pending_actions()] == [user, admin]
    assert await store.decide_action(user, "denied", "alice", "no", now=T0 + 2)
    assert [a.action_id for a in await store.pending_actions(status="denied")] == [user]
    assert len(await store.pending_actions(status=None)) == 2


async def test_bad_input_refused(store: Store) -> None:
    with pytest.raises(DuplicateError):
        await store.create_session("s1", "bob", "assistant")
    with pytest.raises(UnknownSessionError):
        await store.append_message("nope", {"role": "user", "content": "hi"})
    with pytest.raises(UnknownSessionError):
        await store.set_session_state("nope", "active")
    with pytest.raises(UnknownSessionError):
        await _action(store, session_id="nope")
    action = await _action(store)
    with pytest.raises(DuplicateError):
        await _action(store, action_id=action)
    with pytest.raises(ValueError, match="role"):
        await store.append_message("s1", {"role": "robot", "content": "x"})
    with pytest.raises(ValueError, match="unexpected"):
        await store.append_message("s1", {"role": "user", "content": "x", "extra": 1})
    with pytest.raises(ValueError):
        await store.append_message("s1", {"role": "user", "content": "\ud800"})
    with pytest.raises(ValueError):
        await store.decide_action(action, "expired", "alice")
    with pytest.raises(ValueError):
        await _action(store, approver="none")
    assert await store.messages("s1") == []


async def test_concurrent_appends_keep_order(store: Store) -> None:
    await store.create_session("s2", "bob", "assistant")

    async def writer(task: int, session_id: str) -> None:
        for i in range(15):
            await store.append_message(session_id, {"role": "user", "content": f"{task}:{i}"})

    async with trio.open_nursery() as nursery:
        for task in range(6):
            nursery.start_soon(writer, task, "s1" if task % 2 else "s2")
    for session_id, tasks in (("s1", {1, 3, 5}), ("s2", {0, 2, 4})):
        history = [m["content"] for m in await store.messages(session_id)]
        assert len(history) == 45
        for task in tasks:
            mine = [int(c.split(":")[1]) for c in history if c.startswith(f"{task}:")]
            assert mine == list(range(15))  # each task's messages in its own order
    seqs = await store._run(lambda conn: [r[0] for r in conn.execute(
        "SELECT seq FROM messages WHERE session_id = 's1' ORDER BY seq")])
    assert seqs == list(range(1, 46))  # gap-free


async def test_closed_store_refuses(where: Where) -> None:
    store = await where.open()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.get_session("s1")


def _raw_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


async def test_secret_arguments_never_reach_the_file(tmp_path: Path) -> None:
    """A pending action's and a tool call's secret arguments are stored redacted; the
    keyed digest still matches the exact arguments, and only with the key."""
    path = tmp_path / "state.db"
    key = b"K" * 32
    async with await Store.open(path, digest_key=key) as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        arguments = {"to": "acct-7", "pin": "4711"}
        action = await store.add_pending_action(
            session_id="s1", subject="alice", kind="tool", name="pay", arguments=arguments, level=2,
            approver="admin", expires_at=T0 + 60, secret=["pin"], now=T0)
        assert action.arguments == {"to": "acct-7", "pin": "[redacted]"}
        assert store.matches(action, arguments) and not store.matches(action, {"to": "acct-7", "pin": "4712"})
        calls = [{"id": "c1", "type": "function",
                  "function": {"name": "pay", "arguments": '{"pin": "4711", "to": "x"}'}},
                 {"id": "c2", "type": "function", "function": {"name": "pay", "arguments": {"pin": "4711"}}},
                 {"id": "c3", "type": "function", "function": {"name": "pay", "arguments": "not json 4711"}},
                 {"id": "c4", "type": "function", "function": {"name": "echo", "arguments": {"pin": "public"}}}]
        await store.append_message("s1", {"role": "assistant", "content": None, "tool_calls": calls},
                                   secret={"pay": ["pin"]})
        stored = (await store.messages("s1"))[0]["tool_calls"]
        assert [c["function"]["arguments"] for c in stored] == [
            '{"pin": "[redacted]", "to": "x"}', {"pin": "[redacted]"}, "[redacted]", {"pin": "public"}]
        await store.append_message("s1", {"role": "tool", "tool_call_id": "c1", "name": "pay",
                                          "content": '{"status": "ok", "output": {"pin": "4711"}}'}, hide=["4711"])
        assert (await store.messages("s1"))[1]["content"] == '{"status": "ok", "output": {"pin": "[redacted]"}}'
    assert b"4711" not in _raw_bytes(tmp_path)
    async with await Store.open(path) as other:  # another key: the digest proves nothing
        again = await other.get_action(action.action_id)
        assert again is not None and not other.matches(again, arguments)
