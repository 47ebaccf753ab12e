"""LISTEN/NOTIFY under Trio: how one instance tells the others that something happened.

:func:`notify` sends a notification on a pooled connection (``pg_notify``, delivered to
every listener when the sending transaction commits — at once in autocommit mode).
:func:`listen` opens a dedicated connection (LISTEN needs one that stays open), LISTENs
on the given channels and yields each notification as a :class:`Notification`.

How it runs: psycopg's blocking ``Connection.notifies(timeout=...)`` in one worker thread
hands each notification to Trio through a bounded memory channel
(``trio.from_thread.run``: a slow consumer makes the thread wait, nothing piles up).
The thread wakes every ``poll_s`` to see whether it should stop.

Cancellation and errors: leaving the ``async with`` (or a cancellation) tells the thread
to stop; it does within ``poll_s``, and the connection is closed. The thread is never
abandoned while it holds the connection. When the connection is lost, the iteration ends
and leaving the block raises :class:`PgUnavailableError` (inside the block's
``ExceptionGroup``, as any nursery's error): notifications sent meanwhile are lost (NOTIFY is not
queued for absent listeners), so a listener must re-read the state it cares about after
reconnecting. Payloads are text up to 8000 bytes (PostgreSQL's limit).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from ._database import Database, PgUnavailableError, connect_once, describe

#: How often the listening thread checks whether it should stop.
POLL_S: Final = 0.2
_MAX_PAYLOAD_BYTES: Final = 7999


@attrs.frozen
class Notification:
    channel: str
    payload: str
    pid: int  # the sending backend's process id


def _check_channel(channel: str) -> None:
    if not channel or not channel.replace("_", "").isalnum() or not channel.isascii() or len(channel) > 63:
        raise ValueError(f"channel {channel!r}: letters, digits and _ only, at most 63")


async def notify(db: Database, channel: str, payload: str) -> None:
    """Send ``payload`` to every listener of ``channel`` (now: autocommit). ``ValueError``
    for a bad channel name or a payload over PostgreSQL's limit."""
    _check_channel(channel)
    if len(payload.encode()) > _MAX_PAYLOAD_BYTES:
        raise ValueError(f"a notification payload is at most {_MAX_PAYLOAD_BYTES} bytes")
    await db.run(lambda conn: conn.execute("SELECT pg_notify(%s, %s)", (channel, payload)))


@asynccontextmanager
async def listen(url: str, channels: Sequence[str], *, buffer: int = 64,
                 poll_s: float = POLL_S) -> AsyncIterator[trio.MemoryReceiveChannel[Notification]]:
    """``async with listen(url, ["approvals"]) as incoming: async for n in incoming: ...``

    LISTENing has begun when the block is entered: a notification sent after that is
    delivered. Raises :class:`PgUnavailableError` when the connection cannot be made or
    is lost (module docstring)."""
    for channel in channels:
        _check_channel(channel)
    import psycopg

    conn = await trio.to_thread.run_sync(connect_once, url, "sconnect-listen")
    stop = threading.Event()
    send, receive = trio.open_memory_channel[Notification](buffer)
    try:
        for channel in channels:
            await trio.to_thread.run_sync(conn.execute, f'LISTEN "{channel}"'.encode())
    except BaseException:
        await trio.to_thread.run_sync(conn.close)
        raise
    token = trio.lowlevel.current_trio_token()

    def pump() -> None:
        try:
            while not stop.is_set():
                for item in conn.notifies(timeout=poll_s):
                    note = Notification(channel=item.channel, payload=item.payload, pid=item.pid)
                    trio.from_thread.run(send.send, note, trio_token=token)
                    if stop.is_set():
                        break
        finally:
            conn.close()

    async def run_pump() -> None:
        try:
            with trio.CancelScope(shield=True):  # never abandon the thread holding the connection
                await trio.to_thread.run_sync(pump)
        except psycopg.OperationalError as exc:
            await send.aclose()
            raise PgUnavailableError(f"PostgreSQL {describe(url)}: the listening connection was lost: "
                                     f"{str(exc).strip() or type(exc).__name__}") from None
        except (trio.Cancelled, trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # stopping: the consumer went away while a notification was being handed over
        await send.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_pump)
        try:
            async with receive:
                yield receive
        finally:
            stop.set()

