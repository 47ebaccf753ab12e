"""Whether the HTTP client of one MCP request has gone away, and what that cancels.

The HTTP layer notes the client leaving (an ``http.disconnect`` read by whoever reads
the request: the SDK's SSE response watches for it while a call's response is open)
and the handler of that request registers the cancel scope of its call: leaving
cancels it at once, without a task per request waiting for the news.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio


@attrs.define(eq=False)
class Departure:
    """One request's client: set once when it leaves; cancels the scopes registered meanwhile."""

    gone: bool = False
    _scopes: list[trio.CancelScope] = attrs.field(factory=list)

    def set(self) -> None:
        self.gone = True
        for scope in self._scopes:
            scope.cancel()

    @contextmanager
    def cancels(self, scope: trio.CancelScope) -> Iterator[None]:
        """While inside, the client leaving cancels ``scope`` (at once if it has left already)."""
        if self.gone:
            scope.cancel()
        self._scopes.append(scope)
        try:
            yield
        finally:
            self._scopes.remove(scope)
