"""The built-in tools ``remember`` and ``forget``: carried out in the engine, not in a sandbox.

:func:`run_builtin` is the ``builtin`` tool kind's runtime (``engine/toolkinds/builtin.py``),
served by the action path (``engine/server/actions.py``) once the
call has been validated against the built-in's parameters, decided, approved and
audited like any tool call; its execution is audited there too.  It writes only for
the caller's own subject and agent (never from the arguments), within the agent's
``memory`` bounds:

- ``remember``: ``fact`` past ``max_item_size`` bytes, or one more memory than
  ``max_items``, is ``limit_exceeded``; the same fact twice is kept once;
- ``forget``: a ``memory_id`` that is not the caller's (with this agent) is an
  ``error`` saying there is no such memory, exactly as for one that does not exist.

Either needs an agent whose memory is on: a direct ``tool_call`` has no agent, so it
is an ``error``.  Control characters other than newline and tab are refused (the
memory is shown to models and people later).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import attrs

from ..config.model import Tool
from ..protocol import ResultStatus
from ..store import MemoryQuotaError
from .resource import cutoff

if TYPE_CHECKING:
    from ..server.actions import Caller

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@attrs.frozen
class Done:
    status: ResultStatus
    output: Any
    reason: str = ""


def _error(why: str, status: ResultStatus = ResultStatus.ERROR) -> Done:
    return Done(status, {"error": why}, why)


async def run_builtin(caller: Caller, tool: Tool, arguments: dict[str, Any]) -> Done:
    """Carry out ``tool`` (a built-in) for ``caller``; never raises for the call's own failures."""
    config = caller.snap.config
    agent = config.agents.get(caller.agent) if caller.agent is not None else None
    if agent is None:
        return _error(f"{tool.name} needs an agent session: a memory belongs to a user and an agent")
    if not agent.memory.enabled:
        return _error(f"agent {agent.name!r} has no memory (memory: off)")
    store = caller.conn.hub.store
    if tool.builtin == "forget":
        gone = await store.forget(caller.sub, memory_id=str(arguments["memory_id"]), agent=agent.name)
        if not gone:
            return _error(f"no memory {arguments['memory_id']!r} of yours with agent {agent.name!r}")
        return Done(ResultStatus.OK, {"forgotten": arguments["memory_id"]})
    fact = str(arguments["fact"]).strip()
    if not fact or _CONTROL.search(fact):
        return _error("a memory is one line or a few of plain text (no control characters)")
    size, limit = len(fact.encode("utf-8")), int(agent.memory.max_item_size)
    if size > limit:
        return _error(f"the fact is {size} bytes, more than this agent keeps ({limit} bytes): say it shorter",
                      ResultStatus.LIMIT_EXCEEDED)
    now = time.time()
    try:
        record, new = await store.remember(
            caller.sub, agent.name, fact, max_items=agent.memory.max_items, session_id=caller.session_id,
            expired_before=cutoff(config, agent.name, now), now=now,
        )
    except MemoryQuotaError as exc:
        return _error(str(exc), ResultStatus.LIMIT_EXCEEDED)
    return Done(ResultStatus.OK, {"memory_id": record.memory_id, "remembered": record.content, "new": new})
