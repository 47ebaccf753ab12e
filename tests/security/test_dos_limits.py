"""Per-subject limits hold under concurrency, and old state does not pile up (issue 11, item 5).

- test_concurrent_handshakes_cannot_pass_the_per_subject_limit: 150 handshakes of one
  subject at once against a limit of 64 (the attack: each used to pass the check before
  any was registered); at most 64 are accepted, the others get 429.
- test_the_live_session_cap: a subject past `max_sessions_per_subject` gets `rate_limited`
  naming the limit; stopping one session makes room.
- test_the_pending_approval_cap: a subject with as many actions waiting for approval as
  allowed gets `limit_exceeded` (code `rate_limited`) for the next one, which never runs.
- test_approvals_left_pending_by_a_previous_run_are_cancelled: a `pending` row in the
  store at start is cancelled (nobody can answer it any more).
- test_old_sessions_are_pruned: a session untouched for longer than the retention is
  deleted by the sweep, with its history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from engine.client import ServerError, open_client
from engine.protocol import AgentAction, AgentResult, new_id
from engine.server.settings import DATABASE_NAME
from engine.store import Store
from tests.engine.conftest import RunningServer


async def test_concurrent_handshakes_cannot_pass_the_per_subject_limit(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir)
    assert server.settings.max_connections_per_subject == 64
    headers = [("Authorization", f"Bearer {server.token('crowd')}")]
    accepted = refused = 0
    settled = trio.Event()
    release = trio.Event()

    async def attempt() -> None:
        nonlocal accepted, refused
        try:
            async with open_websocket_url(server.url, extra_headers=headers, connect_timeout=30):
                accepted += 1
                if accepted + refused == 150:
                    settled.set()
                await release.wait()
        except ConnectionRejected as exc:
            assert exc.status_code == 429
            refused += 1
            if accepted + refused == 150:
                settled.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(150):
                nursery.start_soon(attempt)
            await settled.wait()
            assert accepted <= 64 and accepted + refused == 150
            release.set()


async def test_the_live_session_cap(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, max_sessions_per_subject=3)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sessions = [(await client.start_session("assistant")).session_id for _ in range(3)]
            with pytest.raises(ServerError) as refused:
                await client.start_session("assistant")
            assert refused.value.code == "rate_limited" and "sessions_per_subject" in refused.value.message
            await client.control(sessions[0], "stop")
            assert (await client.start_session("assistant")).session_id not in sessions


async def test_the_pending_approval_cap(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, max_pending_approvals_per_subject=2)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            ids = []
            for _ in range(3):
                frame_id = new_id()
                ids.append(frame_id)
                await client.send_raw(json.dumps({"type": "tool_call", "id": frame_id, "payload": {
                    "name": "shell", "arguments": {"command": "echo hi"}}}))
            # Every call is announced; exactly one (whichever came third) is refused at once.
            actions, results = {}, {}
            async for event in client.events():
                if isinstance(event, AgentAction):
                    actions[event.reply_to] = event
                elif isinstance(event, AgentResult):
                    results[event.reply_to] = event
                if len(actions) == 3 and results:
                    break
            assert set(actions) == set(ids) and all(a.requires_approval for a in actions.values())
            (result,) = results.values()
            assert str(result.status) == "limit_exceeded"
            assert result.output["code"] == "rate_limited"  # type: ignore[index]
            assert "pending_approvals_per_subject" in result.output["error"]  # type: ignore[index]
            async with open_client(server.url, server.token("root-admin", ("admin", "user"))) as admin:
                # The two within the cap wait for an admin (shown to one who connects); the third
                # was never registered.
                shown = []
                async for event in admin.events():
                    if isinstance(event, AgentAction):
                        shown.append(event.reply_to)
                    if len(shown) == 2:
                        break
                assert set(shown) == set(ids) - {result.reply_to}
                assert (await admin.list_tools()).tools


async def test_approvals_left_pending_by_a_previous_run_are_cancelled(  # type: ignore[no-untyped-def]
    start_server, config_dir: Path, state_dir: Path
) -> None:
    await trio.Path(state_dir).mkdir(parents=True)
    async with await Store.open(state_dir / DATABASE_NAME) as store:
        left = await store.add_pending_action(
            session_id=None, subject="alice", kind="tool", name="shell", arguments={"command": "ls"},
            level=2, approver="admin", expires_at=time.time() + 86400,
        )
    await start_server(config_dir)
    async with await Store.open(state_dir / DATABASE_NAME) as store:
        action = await store.get_action(left.action_id)
    assert action is not None and action.status == "cancelled"
    assert action.reason == "the server restarted before it was answered"


async def test_old_sessions_are_pruned(start_server, config_dir: Path, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    await trio.Path(state_dir).mkdir(parents=True)
    async with await Store.open(state_dir / DATABASE_NAME) as store:
        await store.create_session("old-one", "alice", "assistant", now=time.time() - 7200)
        await store.append_message("old-one", {"role": "user", "content": "hello"}, now=time.time() - 7200)
        await store.create_session("recent", "alice", "assistant")
    server: RunningServer = await start_server(config_dir, retention_s=3600, maintenance_interval_s=0.05)
    with trio.fail_after(20):
        async with await Store.open(state_dir / DATABASE_NAME) as store:
            while True:  # until the sweep has run
                if await store.get_session("old-one") is None:
                    break
                await trio.sleep(0.05)
            assert await store.get_session("recent") is not None
            assert await store.messages("old-one") == []
    assert server.settings.retention_s == 3600
