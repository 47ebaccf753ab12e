"""Grants on PostgreSQL, shared by two instances (two servers, each with its own state
directory, on one database and so with the one audit key every instance there holds): a
grant made on one covers the same call on the other, a revocation on either ends it for
both, and a grant that pins a secret argument covers it on both too (the secret is kept
as a digest under that shared key, never in the clear)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import trio

from engine.auth import AuthSettings, issue
from engine.client import open_client
from engine.protocol import Remember, RememberScope
from engine.server import ServerSettings, serve
from tests.engine.conftest import SECRET
from tests.grants.conftest import ask, covered, grants_config, result_of

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
HOUR = Remember(scope=RememberScope.DURATION, duration="1h")


async def test_two_instances_share_grants(pg_url: str, tmp_path: Path, shared_env: dict[str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCONNECT_AUDIT_KEY_FILE", shared_env["SCONNECT_AUDIT_KEY_FILE"])
    config = grants_config(tmp_path / "config")
    base = Path(tempfile.mkdtemp(prefix="sconnect-grants-", dir="/tmp"))
    os.chmod(base, 0o711)
    auth = AuthSettings(secret=SECRET)
    token = issue(auth, "alice", ["user"], 600)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                a, b = [await nursery.start(serve, ServerSettings(
                    config_dir=config, state_dir=base / name, auth=auth, port=0, database_url=pg_url))
                    for name in ("a", "b")]
                async with open_client(a.websocket, token) as on_a, open_client(b.websocket, token) as on_b:
                    action = await ask(on_a, "note", {"path": "shared.txt"})
                    await on_a.answer(action.action_id, True, remember=HOUR)
                    await result_of(on_a, action)
                    assert await covered(on_b, "note", {"path": "shared.txt"})
                    action = await ask(on_a, "pin", {"account": "1", "pin": "4711"})
                    await on_a.answer(action.action_id, True, remember=HOUR)
                    await result_of(on_a, action)
                    assert await covered(on_a, "pin", {"account": "1", "pin": "4711"})
                    assert await covered(on_b, "pin", {"account": "1", "pin": "4711"})
                    note = next(g for g in (await on_b.list_grants()).grants if g.name == "note")
                    await on_b.revoke_grant(note.grant_id)
                    assert not await covered(on_a, "note", {"path": "shared.txt"})
                a.stop()
                b.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
