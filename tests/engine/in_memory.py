"""The server core without a socket: a real hub (SQLite store, audit writer) and connections
whose transport is a pair of memory channels, for tests of dispatch under ``MockClock``.

- :class:`ChannelTransport`: the server's end, a :class:`~engine.server.transport.Transport`
  over two bounded memory channels; it answers pings at once unless told not to.
- :class:`ChannelPeer`: the client's end, sending encoded frames and reading decoded ones.
- :func:`running_hub`: a hub on a configuration directory, its audit writer running and its
  sessions' nursery open, closed cleanly (the writer's shutdown checkpoint) on exit.
- :func:`connect`: a connection for a principal, served in ``nursery``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from engine.audit import AuditLog
from engine.auth import AuthSettings, Principal
from engine.config import load_config
from engine.protocol import ClientFrame, ServerFrame, decode_server, encode
from engine.server import ServerSettings
from engine.server.app import prepare_state_dir
from engine.server.connection import Connection
from engine.server.hub import Hub
from engine.server.transport import TransportClosed
from engine.store import open_store
from tests.engine.conftest import SECRET


@attrs.define(eq=False)
class ChannelTransport:
    incoming: trio.MemoryReceiveChannel[str | bytes]
    outgoing: trio.MemorySendChannel[str]
    # False: a peer that is connected but never answers a ping (a dead link TCP has not noticed).
    answers_pings: bool = True
    closed_with: tuple[int, str | None] | None = None

    async def receive(self) -> str | bytes:
        try:
            return await self.incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed("the client left") from None

    async def send(self, text: str) -> None:
        try:
            await self.outgoing.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed("the client left") from None

    async def ping(self) -> None:
        if self.closed_with is not None:
            raise TransportClosed("closed")
        if not self.answers_pings:
            await trio.sleep_forever()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
        await self.outgoing.aclose()


@attrs.define(eq=False)
class ChannelPeer:
    outgoing: trio.MemorySendChannel[str | bytes]
    incoming: trio.MemoryReceiveChannel[str]
    transport: ChannelTransport

    async def send(self, frame: ClientFrame) -> str:
        await self.outgoing.send(encode(frame))
        return frame.id

    async def send_raw(self, message: str | bytes) -> None:
        await self.outgoing.send(message)

    async def next_of(self, *kinds: type[Any]) -> Any:
        """The next frame of one of ``kinds``; the others are dropped. EndOfChannel once closed."""
        while True:
            frame: ServerFrame = decode_server(await self.incoming.receive())
            if isinstance(frame, kinds):
                return frame

    async def until_closed(self) -> None:
        """Drop every frame until the server closes the connection."""
        try:
            while True:
                await self.incoming.receive()
        except trio.EndOfChannel:
            pass


@asynccontextmanager
async def running_hub(config_dir: Path, state_dir: Path, **settings: Any) -> AsyncIterator[Hub]:
    options: dict[str, Any] = {"auth": AuthSettings(secret=SECRET), "port": 0, **settings}
    server_settings = ServerSettings(config_dir=config_dir, state_dir=state_dir, **options)
    prepare_state_dir(state_dir)
    async with await AuditLog.open(state_dir) as audit, \
            await open_store(server_settings.database, None, digest_key=audit.digest_key) as store:
        hub = Hub(settings=server_settings, config=load_config(config_dir), store=store, audit=audit)
        async with trio.open_nursery() as root:
            await root.start(audit.run)
            async with trio.open_nursery() as sessions:
                hub.nursery = sessions
                yield hub
                sessions.cancel_scope.cancel()
            await audit.aclose()


def connect(nursery: trio.Nursery, hub: Hub, sub: str = "alice", roles: tuple[str, ...] = ("user",), *,
            answers_pings: bool = True, ttl_s: float = 10 * 365 * 86400) -> ChannelPeer:
    """A client ``sub`` connected to ``hub`` (its connection served in ``nursery``)."""
    to_server, server_in = trio.open_memory_channel[str | bytes](16)
    server_out, from_server = trio.open_memory_channel[str](256)
    transport = ChannelTransport(server_in, server_out, answers_pings=answers_pings)
    principal = Principal(sub=sub, roles=frozenset(roles), expires_at=time.time() + ttl_s, claims={"sub": sub})
    nursery.start_soon(Connection(hub, transport, principal).serve)
    return ChannelPeer(to_server, from_server, transport)
