"""The ``memory_list``, ``memory_forget`` and ``feedback`` frames: a subject's own memories and ratings.

Each handler acts for the connection's subject only: a memory id or a turn id of
another subject is never listed, deleted or rated.  A turn that does not exist is
``not_found``; one of another subject is ``forbidden`` (turn ids are sent only to
their owner, so knowing one is already a leak worth refusing loudly); a memory id
that is not the caller's is ``not_found`` whether it exists or not.

Audit: deleting memories (``memory`` / ``memory.forget``) and rating a turn
(``feedback`` / ``feedback.rate``, with the comment) are recorded before the reply
is sent; listing is a read of the caller's own data and is recorded too
(``memory`` / ``memory.list``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditEvent
from ..protocol import (
    ErrorCode,
    Feedback,
    FeedbackRecorded,
    MemoryForget,
    MemoryForgotten,
    MemoryInfo,
    MemoryList,
    MemoryListRequest,
    ProtocolError,
)
from .resource import cutoff

if TYPE_CHECKING:
    from ..auth import Principal
    from ..protocol import ServerFrame
    from ..server.hub import Hub

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Connection(Protocol):
    """The connection a frame came on, as these handlers use it (engine.server.connection's is
    one: it imports this module, so the handlers name what they need instead of importing it)."""

    @property
    def hub(self) -> Hub: ...

    @property
    def principal(self) -> Principal: ...

    @property
    def audit_context(self) -> Mapping[str, Any]: ...

    def send(self, frame: ServerFrame, *, control: bool = False) -> None: ...


async def _audit(conn: Connection, kind: str, action: str, target: str, outcome: str, *,
                 session_id: str | None = None, agent: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
    hub = conn.hub
    await hub.audit.record(AuditEvent(
        kind=kind, subject=conn.principal.sub, session_id=session_id, agent=agent, action=action, target=target,
        outcome=outcome, policy_revision=hub.policy_revision, details={**conn.audit_context, **(details or {})},
    ))


async def memory_list(conn: Connection, frame: MemoryListRequest) -> None:
    import time

    hub = conn.hub
    now = time.time()
    records = [
        record for record in await hub.store.memories(conn.principal.sub, frame.agent)
        if (limit := cutoff(hub.config, record.agent, now)) is None or record.created_at >= limit
    ]
    await _audit(conn, "memory", "memory.list", frame.agent or "*", "ok", agent=frame.agent,
                 details={"count": len(records)})
    conn.send(MemoryList(
        memories=tuple(MemoryInfo(memory_id=r.memory_id, agent=r.agent, content=r.content, created_at=r.created_at)
                       for r in records),
        reply_to=frame.id,
    ))


async def memory_forget(conn: Connection, frame: MemoryForget) -> None:
    store = conn.hub.store
    sub = conn.principal.sub
    if frame.memory_id is not None:
        gone = await store.forget(sub, memory_id=frame.memory_id)
        if not gone:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no memory {frame.memory_id!r} of yours", reply_to=frame.id)
        target = frame.memory_id
    else:
        gone = await store.forget(sub, agent=frame.agent)
        target = f"all of {frame.agent}" if frame.agent else "all"
    await _audit(conn, "memory", "memory.forget", target, "ok", agent=frame.agent, details={"forgotten": gone})
    conn.send(MemoryForgotten(forgotten=gone, reply_to=frame.id))


async def feedback(conn: Connection, frame: Feedback) -> None:
    hub = conn.hub
    if frame.comment is not None and _CONTROL.search(frame.comment):
        raise ProtocolError(ErrorCode.INVALID_ARGUMENTS, "the comment holds control characters", reply_to=frame.id)
    turn = await hub.store.get_turn(frame.turn_id)
    if turn is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no turn {frame.turn_id!r}", reply_to=frame.id)
    if turn.subject != conn.principal.sub:
        raise ProtocolError(ErrorCode.FORBIDDEN, "this turn belongs to another subject", reply_to=frame.id)
    replaced = await hub.store.rate_turn(turn, frame.rating, frame.comment or None)
    word = "good" if frame.rating > 0 else "bad"
    details: dict[str, Any] = {"model": turn.model, "replaced": replaced}
    if frame.comment:
        details["comment"] = frame.comment
    await _audit(conn, "feedback", "feedback.rate", turn.turn_id, word, session_id=turn.session_id,
                 agent=turn.agent, details=details)
    hub.metrics.feedback_total.inc(agent=turn.agent, model=turn.model or "_none", rating=word)
    conn.send(FeedbackRecorded(turn_id=turn.turn_id, rating=frame.rating, replaced=replaced, reply_to=frame.id))
