"""Grants in the state store, on both backends (SQLite on a real file, PostgreSQL on the
suite's throwaway cluster): kept across reopening, listed by subject and session, ended
exactly once, secrets never stored in the clear, and gone with their session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine.store import GrantRecord, Store, UnknownSessionError

T0 = 1_700_000_000.0


@attrs.frozen
class Where:
    path: Path | None = None
    url: str | None = None

    async def open(self) -> Store:
        key = b"k" * 32  # a fixed digest key: digests compare across opens, as the server's do
        if self.url is not None:
            return await Store.connect(self.url, digest_key=key)
        assert self.path is not None
        return await Store.open(self.path, digest_key=key)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "sqlite":
        return Where(path=tmp_path / "state.db")
    return Where(url=request.getfixturevalue("pg_url"))


def _grant(store: Store, grant_id: str, **overrides: Any) -> GrantRecord:
    fields: dict[str, Any] = dict(
        grant_id=grant_id, subject="alice", session_id=None, scope="duration", kind="tool", name="note",
        arguments={"path": "a.txt", "pin": "[redacted]"}, arguments_digest=store.digest({"path": "a.txt", "pin": "9"}),
        constraints=None, level=1, approver="user", rule_id="r", rule_digest="d", action_id="a1", made_by="alice",
        created_at=T0, expires_at=T0 + 3600, status="live",
    )
    fields.update(overrides)
    return GrantRecord(**fields)


async def test_grants_are_kept_listed_and_ended_once(where: Where) -> None:
    async with await where.open() as store:
        await store.create_session("s1", "alice", "assistant", now=T0)
        constraints = ({"argument": "path", "kind": "same", "digest": store.digest("x"), "value": "a.txt"},)
        await store.add_grant(_grant(store, "g1"))
        await store.add_grant(_grant(store, "g2", scope="session", session_id="s1", constraints=constraints,
                                     created_at=T0 + 1))
        await store.add_grant(_grant(store, "g3", subject="bob", made_by="root", approver="admin", level=2,
                                     created_at=T0 + 2))
    async with await where.open() as store:
        assert [g.grant_id for g in await store.grants(now=T0)] == ["g3", "g2", "g1"]
        assert [g.grant_id for g in await store.grants(subject="alice", now=T0)] == ["g2", "g1"]
        assert [g.grant_id for g in await store.grants(subject="root", now=T0)] == ["g3"]
        assert [g.grant_id for g in await store.grants(session_id="s1", now=T0)] == ["g2"]
        assert [g.grant_id for g in await store.live_grants("alice", "tool", "note", now=T0)] == ["g1", "g2"]
        # Past expires_at: not live any more, still listed with live=False.
        assert await store.live_grants("alice", "tool", "note", now=T0 + 3600) == ()
        assert len(await store.grants(live=False, now=T0 + 3600)) == 3
        g2 = await store.get_grant("g2")
        assert g2 is not None and g2.constraints == constraints and g2.session_id == "s1"

        async def end(status: str) -> bool:
            return await store.end_grant("g1", status, "alice", "done", now=T0 + 5)

        results: list[bool] = []
        async with trio.open_nursery() as nursery:
            for status in ("revoked", "ended", "revoked"):
                nursery.start_soon(lambda s=status: _append(results, end(s)))
        assert sorted(results) == [False, False, True]
        g1 = await store.get_grant("g1")
        assert g1 is not None and (g1.status, g1.ended_at, g1.end_reason) == (g1.status, T0 + 5, "done")
        assert g1.status in ("revoked", "ended")
        assert await store.get_grant("nothing") is None
        with pytest.raises(ValueError, match="revoked' or 'ended"):
            await store.end_grant("g2", "live", None, "x")


async def _append(results: list[bool], call: Any) -> None:
    results.append(await call)


async def test_a_session_grant_needs_its_session_and_goes_with_it(where: Where) -> None:
    async with await where.open() as store:
        with pytest.raises(UnknownSessionError):
            await store.add_grant(_grant(store, "g1", scope="session", session_id="nope"))
        await store.create_session("s1", "alice", "assistant", now=T0)
        await store.add_grant(_grant(store, "g1", scope="session", session_id="s1"))
        assert await store.prune(T0 + 10) == (1, 0)
        assert await store.get_grant("g1") is None


async def test_the_retention_sweep_removes_old_grants_only(where: Where) -> None:
    async with await where.open() as store:
        await store.add_grant(_grant(store, "expired", expires_at=T0 + 10))
        await store.add_grant(_grant(store, "revoked"))
        await store.add_grant(_grant(store, "live"))
        assert await store.end_grant("revoked", "revoked", "alice", "done", now=T0 + 5)
        assert await store.prune_grants(T0 + 20) == 2
        assert [g.grant_id for g in await store.grants(live=False)] == ["live"]


async def test_secrets_stay_out_of_the_table(where: Where) -> None:
    async with await where.open() as store:
        await store.add_grant(_grant(store, "g1"))
        stored = await store.get_grant("g1")
        assert stored is not None and stored.arguments == {"path": "a.txt", "pin": "[redacted]"}
        assert stored.arguments_digest.startswith("hmac-sha256:") and '"9"' not in stored.arguments_digest
