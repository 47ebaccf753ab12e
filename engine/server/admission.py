"""Who may take a connection slot: handshakes per peer address, connections per subject.

Both counts are taken and released synchronously, with no ``await`` between the check
and the increment, so that concurrent handshakes cannot all pass a limit they each
saw unreached (150 handshakes of one subject against a limit of 64 used to get 150
connections: the count was checked before an await and registered after it).

- A TCP connection takes a *handshake* slot as soon as it is accepted, overall and for
  its peer address, and gives it back when its WebSocket handshake ends (accepted,
  refused or timed out).  Past either limit the connection is closed at once: an idle
  connection that never speaks must not hold a descriptor.
- An authenticated handshake takes a *connection* slot, overall and for its subject,
  before it is accepted, and keeps it until the connection closes.
"""

from __future__ import annotations

import collections

import attrs

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
    # Handshakes closed at once for want of a slot (the server logs these in aggregate).
    turned_away: int = 0
    warned_at: float = float("-inf")

    @classmethod
    def for_settings(cls, settings: ServerSettings) -> Admission:
        assert settings.max_handshakes is not None and settings.max_handshakes_per_peer is not None
        return cls(
            settings.max_handshakes, settings.max_handshakes_per_peer,
            settings.max_connections, settings.max_connections_per_subject,
        )

    def begin_handshake(self, peer: str) -> bool:
        """Take a handshake slot for ``peer``; False (nothing taken) when none is free."""
        if self.handshakes >= self.max_handshakes or self.by_peer[peer] >= self.max_handshakes_per_peer:
            self.turned_away += 1
            return False
        self.handshakes += 1
        self.by_peer[peer] += 1
        return True

    def end_handshake(self, peer: str) -> None:
        self.handshakes -= 1
        self.by_peer[peer] -= 1
        if self.by_peer[peer] <= 0:
            del self.by_peer[peer]

    def admit(self, sub: str) -> tuple[int, str] | None:
        """Take a connection slot for ``sub``; else (HTTP status, reason) and nothing taken."""
        if self.connections >= self.max_connections:
            return 503, f"the server holds its maximum of {self.max_connections} connections; retry later"
        mine = self.by_subject[sub]
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
