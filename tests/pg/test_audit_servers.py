"""One audit chain across two real ``sconnect serve`` processes on one PostgreSQL database.

Both instances get the same key file (as an operator distributes it); clients on each
converse at the same time, so both write the shared chain concurrently. After a graceful
stop, ``sconnect audit verify`` (SCONNECT_DATABASE_URL and the key set, run from a third
"host": a directory neither server used) finds one intact chain holding every record of
both; after someone with database access disables the triggers and edits one record, it
exits 1 naming that record as edited. ``audit archive`` says it is SQLite-only."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import psycopg
import pytest
import trio

from engine.client import open_client
from tests.security.cliserver import SECRET, place, sconnect, serving

pytestmark = pytest.mark.slow


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def _chat(url: str, sub: str, turns: int) -> None:
    async with open_client(url, _token(sub)) as client:
        sid = (await client.start_session("assistant")).session_id
        for i in range(turns):
            turn = await client.converse(sid, f"what is {i}*7")
            assert turn.response.content == f"{i}*7 = {i * 7}"


async def test_two_instances_write_one_chain_that_verifies(pg_url: str, shared_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    env = shared_env
    with place() as a_place, place() as b_place:
        async with serving(a_place, env=env) as a, serving(b_place, env=env) as b:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for n in range(3):
                        nursery.start_soon(_chat, a.url, f"a{n}", 4)
                        nursery.start_soon(_chat, b.url, f"b{n}", 4)
        with psycopg.connect(pg_url) as conn:
            subjects = {r[0] for r in conn.execute("SELECT DISTINCT subject FROM audit_records")}
            executions = conn.execute("SELECT count(*) FROM audit_records WHERE kind = 'execution'").fetchone()
            reasons = [r[0] for r in conn.execute("SELECT reason FROM audit_checkpoints ORDER BY id")]
        assert {f"{i}{n}" for i in "ab" for n in range(3)} <= subjects
        assert executions is not None and executions[0] >= 24
        assert reasons.count("open") == 2 and reasons.count("shutdown") == 2

        # From a third place: the URL and the key are all it needs.
        done = await sconnect("audit", "verify", "--state-dir", str(tmp_path / "elsewhere"), env=env)
        assert done.code == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK: ") and "4 checkpoints" in done.stdout
        # Each instance's own head file is checked when its state directory is named.
        done = await sconnect("audit", "verify", "--state-dir", str(a_place.state), env=env)
        assert done.code == 0, done.stdout + done.stderr

        tail = await sconnect("audit", "tail", "-n", "3", "--json", env=env)
        assert tail.code == 0 and len(tail.stdout.splitlines()) == 3, tail.stderr

        refused = await sconnect("audit", "archive", "--state-dir", str(a_place.state), env=env)
        assert refused.code == 2 and "SQLite audit log only" in refused.stderr, refused.stderr

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the triggers, off for this session
        # Always a change, whatever record 5 is (the instances' interleaving decides that).
        conn.execute("UPDATE audit_records SET outcome = CASE WHEN outcome = 'ok' THEN 'denied' ELSE 'ok' END "
                     "WHERE seq = 5")
    done = await sconnect("audit", "verify", env=env)
    assert done.code == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAILED: seq 5: edited"), done.stdout
