"""The server-wide liveness timer (engine.server.liveness): keepalive, idle timeout and token
expiry without a task per connection.  In-memory connections; trio's MockClock where time passes.

- ``test_an_idle_connection_holds_no_task_of_its_own``: once its first frames are written, a
  connection's nursery holds no task (no keepalive, no token timer, no idle writer); a
  request is still answered, and the nursery is empty again afterwards.
- ``test_each_connection_is_closed_at_its_own_token_expiry``: three connections with tokens
  expiring at 5, 50 and 500 virtual seconds are each closed with 4001 at their own expiry,
  the later ones still serving requests meanwhile.
- ``test_pongs_keep_an_idle_connection_and_silence_ends_one``: with a 60 s idle timeout and a
  ping every 10 s, a connection that answers pings and sends nothing is still served after
  ten idle timeouts; a second one that does not answer is closed with 4003 at 10 + 5 s, and
  a third, answering pings on a server that never pings within the idle timeout, with 4002.
- ``test_a_frame_sent_as_the_connection_is_cancelled_is_still_delivered``: the writer task
  runs only while there is something to send; one started in a connection being cancelled
  (a tool call's cancelled result) must leave its frame to the final flush, not lose it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio
import trio.testing

from engine.auth import Principal
from engine.protocol import ActionList, ActionListRequest, ToolList, new_id
from engine.server.connection import CLOSE_IDLE, CLOSE_NO_PONG, CLOSE_TOKEN_EXPIRED, Connection
from tests.engine.conftest import copy_example_config
from tests.engine.in_memory import ChannelPeer, ChannelTransport, connect, running_hub


def _served(nursery: trio.Nursery, hub: object, sub: str, ttl_s: float = 3600) -> tuple[Connection, ChannelPeer]:
    to_server, server_in = trio.open_memory_channel[str | bytes](16)
    server_out, from_server = trio.open_memory_channel[str](256)
    transport = ChannelTransport(server_in, server_out)
    principal = Principal(sub=sub, roles=frozenset({"user"}), expires_at=time.time() + ttl_s, claims={"sub": sub})
    conn = Connection(hub, transport, principal)  # type: ignore[arg-type]
    nursery.start_soon(conn.serve)
    return conn, ChannelPeer(to_server, from_server, transport)


async def _answered(peer: ChannelPeer) -> None:
    request = ActionListRequest(id=new_id())
    await peer.send(request)
    assert (await peer.next_of(ActionList)).reply_to == request.id


@contextlib.asynccontextmanager
async def _settled(tmp_path: Path, state_dir: Path) -> AsyncIterator[tuple[Connection, ChannelPeer]]:
    """One connection of alice's, served, its tool list read and every task blocked; stopped after."""
    config = copy_example_config(tmp_path / "config")
    with trio.fail_after(30):
        async with running_hub(config, state_dir) as hub, trio.open_nursery() as nursery:
            conn, peer = _served(nursery, hub, "alice")
            await peer.next_of(ToolList)
            await trio.testing.wait_all_tasks_blocked()
            yield conn, peer
            nursery.cancel_scope.cancel()


async def test_an_idle_connection_holds_no_task_of_its_own(tmp_path: Path, state_dir: Path) -> None:
    async with _settled(tmp_path, state_dir) as (conn, peer):
        assert conn._nursery is not None and conn._nursery.child_tasks == frozenset()
        await _answered(peer)
        await trio.testing.wait_all_tasks_blocked()
        assert conn._nursery.child_tasks == frozenset()


async def test_each_connection_is_closed_at_its_own_token_expiry(
    tmp_path: Path, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = copy_example_config(tmp_path / "config")
    async with running_hub(config, state_dir, idle_timeout_s=10_000.0, ping_interval_s=1_000.0) as hub, \
            trio.open_nursery() as nursery:
        started = trio.current_time()
        peers = [_served(nursery, hub, f"user-{ttl}", ttl_s=ttl)[1] for ttl in (5, 50, 500)]
        for peer in peers:
            await peer.next_of(ToolList)
        for index, ttl in enumerate((5, 50, 500)):
            for later in peers[index + 1:]:
                await _answered(later)
            await peers[index].until_closed()
            closed_at = trio.current_time() - started
            assert ttl - 0.5 <= closed_at < ttl + 1  # the expiry is wall-clock: set before serve() begins
            assert peers[index].transport.closed_with == (CLOSE_TOKEN_EXPIRED, "token expired")
        nursery.cancel_scope.cancel()


async def test_pongs_keep_an_idle_connection_and_silence_ends_one(
    tmp_path: Path, state_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = copy_example_config(tmp_path / "config")
    async with running_hub(config, state_dir, idle_timeout_s=60.0, ping_interval_s=10.0, ping_timeout_s=5.0) as hub, \
            trio.open_nursery() as nursery:
        started = trio.current_time()
        answering = connect(nursery, hub, "alice")
        silent = connect(nursery, hub, "bob", answers_pings=False)
        await answering.next_of(ToolList)
        await silent.next_of(ToolList)
        await silent.until_closed()
        assert silent.transport.closed_with == (CLOSE_NO_PONG, "no pong: the connection looks dead")
        assert 15 <= trio.current_time() - started < 16
        await trio.sleep(600)
        assert answering.transport.closed_with is None
        await _answered(answering)
        nursery.cancel_scope.cancel()
    async with running_hub(config, state_dir, idle_timeout_s=60.0, ping_interval_s=1_000.0) as hub, \
            trio.open_nursery() as nursery:
        started = trio.current_time()
        unpinged = connect(nursery, hub, "carol")
        await unpinged.until_closed()
        assert unpinged.transport.closed_with == (CLOSE_IDLE, "idle for 60s (no frames, no pongs)")
        assert 60 <= trio.current_time() - started < 61
        nursery.cancel_scope.cancel()


async def test_a_frame_sent_as_the_connection_is_cancelled_is_still_delivered(tmp_path: Path, state_dir: Path) -> None:
    async with _settled(tmp_path, state_dir) as (conn, peer):
        conn._stop()
        conn.send(ActionList(actions=(), reply_to="sent-while-cancelled"))
        assert (await peer.next_of(ActionList)).reply_to == "sent-while-cancelled"
