"""What a connection's dispatch needs of the wire: receive text, send text, ping, close.

:class:`~engine.server.connection.Connection` decodes frames, routes them to their
handlers and encodes the replies over any :class:`Transport`; nothing there knows
WebSockets.  The server's WebSocket is one transport
(:class:`engine.server.websocket.WebSocketTransport`, the only module of the server
core that imports trio-websocket); a pair of memory channels in a test is another.

Error handling: every method raises :class:`TransportClosed` once the peer is gone,
whatever the transport's own exception; nothing else is expected of it.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import ScalyticsError


class TransportClosed(ScalyticsError):
    """The peer is gone (closed, reset, or the transport was closed here)."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next message from the peer, whole (text, or bytes for a binary message)."""
        ...

    async def send(self, text: str) -> None:
        """Send one message.  Cancelled midway, it may have written part of it: the
        transport is then unusable (the caller closes it)."""
        ...

    async def ping(self) -> None:
        """Return when the peer has answered a ping; no timeout of its own (the caller sets one)."""
        ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Tell the peer why and close; may block on a peer that does not read (bound it)."""
        ...
