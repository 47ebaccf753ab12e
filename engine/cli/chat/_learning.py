"""The chat's commands for what the agent learns: ``/memory`` and ``/good`` / ``/bad``.

- ``/memory`` lists what agents remember about you; ``/memory forget ID`` deletes one
  (a unique prefix of its id is enough), ``/memory forget all`` deletes all of yours;
- ``/good [comment]`` and ``/bad [comment]`` rate the last answer of this session (a later
  rating of the same answer replaces the earlier one).

What the server refuses (an id that is not yours, a turn that is not) comes back as an
``error`` and is shown by the caller, like every other command's.
"""

from __future__ import annotations

import time

from ._output import shown, shown_body
from ._render import short
from ._state import ChatState

MEMORY_USAGE = "usage: /memory (list), /memory forget ID (a unique prefix is enough), /memory forget all"


class LearningMixin(ChatState):
    """``/memory``, ``/good``, ``/bad`` (a part of :class:`engine.cli.chat._chat.Chat`)."""

    __slots__ = ()

    async def _rate(self, rating: int, comment: str) -> None:
        from ...protocol import Feedback, FeedbackRecorded, new_id

        assert self.client is not None
        if self.busy is not None and self.busy_kind == "turn":
            # The last answer would be the one before this turn's: rate this one when it is there.
            self.out.line("a turn is running: rate its answer once it is there")
            return
        if not self.last_turn:
            self.out.line("no answer to rate yet in this session: ask something first")
            return
        reply = await self.client.request(
            Feedback(id=new_id(), turn_id=self.last_turn, rating=rating, comment=comment or None))
        self.out.frame(reply)
        if isinstance(reply, FeedbackRecorded):
            word = "good" if rating > 0 else "bad"
            again = " (replacing your earlier rating)" if reply.replaced else ""
            self.out.note("rated", f"[rated] the last answer as {word}{again}; thank you", rating=rating)

    async def _memory(self, rest: str) -> None:
        from ...protocol import MemoryForget, MemoryList, MemoryListRequest, new_id

        assert self.client is not None
        verb, _, target = rest.partition(" ")
        target = target.strip()
        if not verb:
            listing = await self.client.request(MemoryListRequest(id=new_id()))
            self.out.frame(listing)
            if isinstance(listing, MemoryList):
                self.memory_ids = [item.memory_id for item in listing.memories]
                if not listing.memories:
                    self.out.line("nothing is remembered about you")
                    return
                self.out.line(f"{len(listing.memories)} thing(s) remembered about you (/memory forget ID deletes one):")
                for item in listing.memories:
                    when = time.strftime("%Y-%m-%d", time.gmtime(item.created_at))
                    self.out.line(f"  {short(item.memory_id)}  {shown(item.agent)}  {when}  "
                                  f"{shown_body(item.content)}")
            return
        if verb != "forget" or not target or " " in target:
            self.out.line(MEMORY_USAGE)
            return
        if target == "all":
            frame = MemoryForget(id=new_id(), all=True)
        else:
            matches = sorted(i for i in self.memory_ids if i.startswith(target))
            if len(matches) > 1 and target not in matches:
                self.out.line(f"{len(matches)} memories start with {shown(target)!r}; give more of the id")
                return
            # An id not listed here is sent as typed: the server has the last word (not_found).
            frame = MemoryForget(id=new_id(), memory_id=matches[0] if len(matches) == 1 else target)
        reply = await self.client.request(frame)
        self.out.frame(reply)
        forgotten = getattr(reply, "forgotten", 0)
        self.out.note("forgotten", f"[memory] forgot {forgotten} thing(s)", forgotten=forgotten)
