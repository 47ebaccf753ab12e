"""One client's queue of encoded frames: replies and events in order, control notices first.

Why two lanes: a client that floods without reading fills its queue with the replies
to its own requests.  The notice that it is being rate limited must not wait behind
them (nor be refused for want of room): it goes to a small lane of its own, which
the writer drains before the ordered lane.  Control notices do not need an order
among replies: each one stands alone (``rate_limited``, ``unavailable``).

The queue is bounded in both lanes; :meth:`Outbox.put` says when the ordered lane is
full (the connection then cuts the client off: it is not reading) and drops a control
notice when its lane is full (the client has not read the earlier ones either).
Nothing waits on the outbox: the connection starts its writer task when it queues a
frame and the writer ends when the outbox is empty (engine.server.connection).
"""

from __future__ import annotations

import collections

import attrs
import trio

__all__ = ["Outbox"]


@attrs.define(eq=False)
class Outbox:
    """Lanes are created on first use and dropped when drained: an idle connection's
    outbox holds no buffers (a deque is ~0.75 KiB even when empty)."""

    capacity: int
    control_capacity: int = 8
    _ordered: collections.deque[tuple[str, str | None]] | None = None
    _control: collections.deque[tuple[str, str | None]] | None = None
    # Wakes notices_taken() when the control lane has been emptied; created by the first waiter.
    _taken: trio.lowlevel.ParkingLot | None = None
    _closed: bool = False

    def put(self, text: str, reply_to: str | None = None, *, control: bool = False) -> bool:
        """Queue one encoded frame; False when its lane is full (or the outbox is closed)."""
        if self._closed:
            return False
        if control:
            lane = self._control
            if lane is None:
                lane = self._control = collections.deque()
            elif len(lane) >= self.control_capacity:
                return False
        else:
            lane = self._ordered
            if lane is None:
                lane = self._ordered = collections.deque()
            elif len(lane) >= self.capacity:
                return False
        lane.append((text, reply_to))
        return True

    def get_nowait(self) -> tuple[str, str | None]:
        """The next frame (text, the id it answers), control lane first; ``trio.WouldBlock`` when empty."""
        lane = self._control
        if lane:
            item = lane.popleft()
            if not lane:
                self._control = None
                if self._taken is not None:
                    self._taken.unpark_all()
            return item
        lane = self._ordered
        if lane:
            item = lane.popleft()
            if not lane:
                self._ordered = None
            return item
        raise trio.WouldBlock

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> bool:
        """Whether a frame is queued in either lane."""
        return bool(self._ordered or self._control)

    @property
    def control_pending(self) -> int:
        return len(self._control) if self._control else 0

    async def notices_taken(self) -> None:
        """Return once the control lane is empty (its notices handed to the writer)."""
        while self._control:
            if self._taken is None:
                self._taken = trio.lowlevel.ParkingLot()
            await self._taken.park()

    def close(self) -> None:
        """Accept no more frames; what is queued can still be taken."""
        self._closed = True
