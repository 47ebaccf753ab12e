"""Who may take a connection slot: handshakes per peer address, connections per subject.

Both counts are taken and released synchronously, with no ``await`` between the check
and the increment, so that concurrent handshakes cannot all pass a limit they each
saw unreached (150 handshakes of one subject against a limit of 64 used to get 150
connections: the count was checked before an await and registered after it).

- A TCP connection takes a *handshake* slot as soon as it is accepted, overall and for
  its peer address, and gives it back when its WebSocket handshake ends (accepted,
  refused or timed out).  Past its address's limit the connection is closed at once:
  an idle connection that never speaks must not hold a descriptor.  When the overall
  limit is reached, the *oldest* handshake still in progress is dropped to make room:
  a real client completes its handshake in milliseconds, so connections from many
  addresses that never speak cannot keep everybody else out.
- An authenticated handshake takes a *connection* slot, overall and for its subject,
  before it is accepted, and keeps it until the connection closes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs
import trio

from .settings import ServerSettings

__all__ = ["Admission"]


@attrs.define(eq=False)
class Admission:
    max_handshakes: int
    max_handshakes_per_peer: int
    max_connections: int
    max_connections_per_subject: int
    handshakes: int = 0
    connections: int = 0
    by_peer: collections.Counter[str] = attrs.field(factory=collections.Counter)
    by_subject: collections.Counter[str] = attrs.field(factory=collections.Counter)
    # Handshakes in progress, oldest first: the peer and the scope that ends it if evicted.
    _open: dict[object, tuple[str, trio.CancelScope]] = attrs.field(factory=dict)
    # Handshakes closed (at once, or evicted) for want of a slot; logged in aggregate.
    turned_away: int = 0
    warned_at: float = float("-inf")
    # The subject's connections to the other instances sharing a database (best effort).
    remote_connections: Callable[[str], int] = lambda sub: 0

    @classmethod
    def for_settings(cls, settings: ServerSettings) -> Admission:
        assert settings.max_handshakes is not None and settings.max_handshakes_per_peer is not None
        return cls(
            settings.max_handshakes, settings.max_handshakes_per_peer,
            settings.max_connections, settings.max_connections_per_subject,
        )

    def begin_handshake(self, peer: str, scope: trio.CancelScope) -> object | None:
        """Take a handshake slot for ``peer``: a ticket for :meth:`end_handshake`, or None
        (nothing taken) when its address has no slot left.  ``scope`` is cancelled if this
        handshake is later evicted to make room."""
        if self.by_peer[peer] >= self.max_handshakes_per_peer:
            self.turned_away += 1
            return None
        while self.handshakes >= self.max_handshakes and self._open:
            oldest = next(iter(self._open))
            _peer, evicted = self._open[oldest]
            self.end_handshake(oldest)
            evicted.cancel()
            self.turned_away += 1
        ticket = object()
        self._open[ticket] = (peer, scope)
        self.handshakes += 1
        self.by_peer[peer] += 1
        return ticket

    def end_handshake(self, ticket: object) -> None:
        """Give the slot back (idempotent: an evicted handshake's ticket is already void)."""
        entry = self._open.pop(ticket, None)
        if entry is None:
            return
        peer = entry[0]
        self.handshakes -= 1
        self.by_peer[peer] -= 1
        if self.by_peer[peer] <= 0:
            del self.by_peer[peer]

    def admit(self, sub: str) -> tuple[int, str] | None:
        """Take a connection slot for ``sub``; else (HTTP status, reason) and nothing taken."""
        if self.connections >= self.max_connections:
            return 503, f"the server holds its maximum of {self.max_connections} connections; retry later"
        mine = self.by_subject[sub] + self.remote_connections(sub)
        if mine >= self.max_connections_per_subject:
            return 429, f"{sub} already holds {mine} connections (the maximum per subject)"
        self.connections += 1
        self.by_subject[sub] += 1
        return None

    def leave(self, sub: str) -> None:
        self.connections -= 1
        self.by_subject[sub] -= 1
        if self.by_subject[sub] <= 0:
            del self.by_subject[sub]
