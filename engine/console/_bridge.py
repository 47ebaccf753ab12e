"""An ASGI WebSocket seen through the few methods :class:`~engine.server.connection.Connection` uses.

The console's page speaks the same protocol as every other client, through the same
``Connection`` logic; only the transport differs: hypercorn's ASGI events instead of a
trio-websocket connection. This adapter offers ``get_message``, ``send_message``,
``ping`` and ``aclose`` and raises trio-websocket's ``ConnectionClosed`` once the
peer has gone, which is all ``Connection`` relies on.

Keepalive: hypercorn answers the browser's pings and sends its own (every
``ping_interval``), but ASGI gives the application no pong, so ``ping`` returns at once
while the socket is open; a browser that vanished is noticed when its TCP connection
ends or a write to it fails, not by a missed pong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from trio_websocket import CloseReason, ConnectionClosed

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class AsgiWebSocket:
    """The accepted ASGI WebSocket of one console page."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed: CloseReason | None = None
        # Set when the server ends the connection for a reason of its own (sign-out).
        self._close_as: tuple[int, str] | None = None

    @property
    def closed(self) -> CloseReason | None:
        return self._closed

    def _gone(self, code: int, reason: str | None = None) -> ConnectionClosed:
        if self._closed is None:
            self._closed = CloseReason(code, reason)
        return ConnectionClosed(self._closed)

    async def get_message(self) -> str | bytes:
        """The next text (or binary) message; ``ConnectionClosed`` once the peer has gone."""
        if self._closed is not None:
            raise ConnectionClosed(self._closed)
        event = await self._receive()
        if event["type"] == "websocket.receive":
            text = event.get("text")
            if text is not None:
                return str(text)
            return bytes(event.get("bytes") or b"")
        raise self._gone(int(event.get("code", 1005)), event.get("reason"))

    async def send_message(self, message: str | bytes) -> None:
        if self._closed is not None:
            raise ConnectionClosed(self._closed)
        event: dict[str, Any] = {"type": "websocket.send"}
        event["text" if isinstance(message, str) else "bytes"] = message
        try:
            await self._send(event)
        except Exception as exc:
            # hypercorn refuses a send once the connection is closed (its own error type).
            raise self._gone(1006, "the connection was lost") from exc

    async def ping(self, payload: bytes | None = None) -> None:
        if self._closed is not None:
            raise ConnectionClosed(self._closed)

    def close_as(self, code: int, reason: str) -> None:
        """The close code and reason of the next ``aclose``, whatever its caller asks for."""
        self._close_as = (code, reason)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if self._closed is not None:
            return
        if self._close_as is not None:
            code, reason = self._close_as
        self._closed = CloseReason(code, reason)
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason or ""})
        except Exception:
            pass  # already gone: nothing left to tell it
