"""One client's queue of encoded frames: replies and events in order, control notices first.

Why two lanes: a client that floods without reading fills its queue with the replies
to its own requests.  The notice that it is being rate limited must not wait behind
them (nor be refused for want of room): it goes to a small lane of its own, which
the writer drains before the ordered lane.  Control notices do not need an order
among replies: each one stands alone (``rate_limited``, ``unavailable``).

The queue is bounded in both lanes; :meth:`Outbox.put` says when the ordered lane is
full (the connection then cuts the client off: it is not reading) and drops a control
notice when its lane is full (the client has not read the earlier ones either).
"""

from __future__ import annotations

import collections

import attrs
import trio

__all__ = ["Outbox"]


@attrs.define(eq=False)
class Outbox:
    capacity: int
    control_capacity: int = 8
    _ordered: collections.deque[tuple[str, str | None]] = attrs.field(factory=collections.deque)
    _control: collections.deque[tuple[str, str | None]] = attrs.field(factory=collections.deque)
    _waiting: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    _taken: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    _closed: bool = False

    def put(self, text: str, reply_to: str | None = None, *, control: bool = False) -> bool:
        """Queue one encoded frame; False when its lane is full (or the outbox is closed)."""
        lane, limit = (self._control, self.control_capacity) if control else (self._ordered, self.capacity)
        if self._closed or len(lane) >= limit:
            return False
        lane.append((text, reply_to))
        self._waiting.unpark()
        return True

    def get_nowait(self) -> tuple[str, str | None]:
        """The next frame (text, the id it answers), control lane first; ``trio.WouldBlock`` when empty."""
        if self._control:
            item = self._control.popleft()
            if not self._control:
                self._taken.unpark_all()
            return item
        if self._ordered:
            return self._ordered.popleft()
        raise trio.WouldBlock

    async def get(self) -> tuple[str, str | None]:
        """The next frame, waiting for one; ``trio.EndOfChannel`` once closed and empty."""
        while True:
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                if self._closed:
                    raise trio.EndOfChannel from None
                await self._waiting.park()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def control_pending(self) -> int:
        return len(self._control)

    async def notices_taken(self) -> None:
        """Return once the control lane is empty (its notices handed to the writer)."""
        while self._control:
            await self._taken.park()

    def close(self) -> None:
        """Accept no more frames; what is queued can still be taken."""
        self._closed = True
        self._waiting.unpark_all()
