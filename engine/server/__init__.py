"""The WebSocket server: handshake authentication, connections, sessions and the turn loop.

The server itself (:mod:`.app`, and through it the hub, the sessions, the sandbox and
the audit log: ~0.3 s of imports) loads on first use of :func:`serve` or
:class:`ServerHandle`: ``sconnect serve`` checks its flags, settings file and
variables with :mod:`.settings` and :mod:`.options` alone, and refuses bad ones
without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServerSettings as ServerSettings

if TYPE_CHECKING:
    from .app import ServerHandle as ServerHandle
    from .app import serve as serve

_LAZY = ("serve", "ServerHandle")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
