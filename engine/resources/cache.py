"""A bounded cache of api:// answers: least recently used first out, expired entries dropped.

Bounded twice, by entries and by bytes of content, so that many distinct reads
(each a new URL) cannot grow the engine's memory: past either bound the least
recently used entries go.  An entry lives ``ttl_s`` seconds; an expired entry
is never returned, and every store sweeps the expired ones out.  An answer
larger than the whole byte budget is not cached.  Not shared between tasks
across awaits: every method runs to completion without a checkpoint.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import attrs

from .content import Content


@attrs.frozen
class _Entry:
    expires_at: float
    size: int
    content: Content


def content_size(content: Content) -> int:
    """Bytes the content holds (text counted as UTF-8)."""
    return len(content.data) if isinstance(content.data, bytes) else len(content.data.encode("utf-8"))


@attrs.define(eq=False)
class ResponseCache:
    ttl_s: float
    max_entries: int
    max_bytes: int
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[str, _Entry] = attrs.field(factory=OrderedDict, init=False)
    _bytes: int = attrs.field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of content held now."""
        return self._bytes

    def get(self, key: str) -> Content | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.content

    def put(self, key: str, content: Content) -> None:
        self.sweep()
        size = content_size(content)
        if key in self._entries:
            self._drop(key)
        if self.ttl_s <= 0 or size > self.max_bytes or self.max_entries < 1:
            return
        while self._entries and (len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes):
            self._drop(next(iter(self._entries)))
        self._entries[key] = _Entry(self.clock() + self.ttl_s, size, content)
        self._bytes += size

    def sweep(self) -> int:
        """Drop every expired entry; how many went."""
        now = self.clock()
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
