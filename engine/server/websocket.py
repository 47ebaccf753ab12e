"""The WebSocket as a :class:`~engine.server.transport.Transport`: trio-websocket's errors become ours."""

from __future__ import annotations

import attrs
from trio_websocket import ConnectionClosed, WebSocketConnection

from .transport import TransportClosed


@attrs.frozen
class WebSocketTransport:
    ws: WebSocketConnection

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def ping(self) -> None:
        # trio-websocket answers the peer's pings from its reader task, and waits here for our pong.
        try:
            await self.ws.ping()
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)
