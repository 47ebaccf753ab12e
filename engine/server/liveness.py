"""One server-wide timer for every connection's keepalive, idle timeout and token expiry.

Why not a task per connection: an idle connection would then hold two sleeping tasks
(a keepalive loop and a token timer) and a cancel scope around every receive -- about
10 KiB of an idle connection's ~40 -- for timers that fire once every 30 s at most.
Here each connection is one entry in a heap keyed by the next time it needs looking
at (its ping due, its idle deadline, its token's expiry, whichever comes first); one
task sleeps until the earliest entry, asks that connection what to do
(:meth:`Watched.look`), and files it again under the time it returns.  A ping is a
short task of the connection's own, alive only until the pong (or its timeout).

Entries are looked at lazily: a connection's deadlines only ever move later (a frame,
a pong), so an entry filed under an earlier time is looked at early and re-filed,
never missed.  An entry holds its connection weakly: a connection that has closed
is dropped when its entry comes up, and is not kept alive until then.

Error handling: a connection whose :meth:`Watched.look` raises is logged and dropped
from the heap (its own reader still ends it when its client leaves); the timer
itself never ends the server.  The timer task is started on the first connection of
a hub, in the hub's nursery (it ends with it); it needs no start-up of its own, so
the server, the console and an in-memory test hub all get it the same way.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import weakref
from typing import Protocol

import attrs
import trio

from .hub import Hub

log = logging.getLogger(__name__)

__all__ = ["Watched", "watch"]


class Watched(Protocol):
    def look(self, now: float) -> float | None:
        """Act on what is due at ``now`` (close, ping); the next time to look (``> now``), or None: done."""
        ...


@attrs.define(eq=False)
class _Timer:
    _heap: list[tuple[float, int, weakref.ref[Watched]]] = attrs.field(factory=list)
    _order: itertools.count[int] = attrs.field(factory=itertools.count)
    # The timer's current sleep: moved earlier when a connection needs looking at sooner.
    _sleep: trio.CancelScope | None = None

    def file(self, conn: Watched, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._order), weakref.ref(conn)))
        if self._sleep is not None and at < self._sleep.deadline:
            self._sleep.deadline = at

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _at, order, ref = heapq.heappop(heap)
                conn = ref()
                if conn is None:
                    continue
                try:
                    again = conn.look(now)
                except Exception:
                    log.exception("a connection's keepalive check failed; it is no longer watched")
                    continue
                if again is not None:
                    # Never "now" again: that would look at the same connection for ever.
                    heapq.heappush(heap, (max(again, now + 0.001), order, ref))
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None


_timers: weakref.WeakKeyDictionary[Hub, _Timer] = weakref.WeakKeyDictionary()


def watch(hub: Hub, conn: Watched, at: float) -> None:
    """Look at ``conn`` at ``at`` (trio clock) and from then on whenever its ``look`` says."""
    timer = _timers.get(hub)
    if timer is None:
        assert hub.nursery is not None, "the hub's nursery must be open before connections are served"
        timer = _timers[hub] = _Timer()
        hub.nursery.start_soon(timer.run)
    timer.file(conn, at)
