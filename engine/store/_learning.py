"""What agents learn, in the state store: memories per subject and agent, turns, ratings.

Operations of :class:`~engine.store.Store` (mixed in), on both backends:

- memories: one short text per row, owned by a ``(subject, agent)`` pair.  Every
  operation takes the subject and touches only that subject's rows, so no call can
  read or delete another subject's memory, whatever ids it is given.  A write that
  would exceed the owner's ``max_items`` raises :class:`MemoryQuotaError`; the count
  and the insert are one transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
  advisory lock per owner, so two instances cannot both take the last place).
  Rows older than the retention cutoff given by the caller are deleted by the write
  and skipped by reads.
- turns: one row per answered turn (the question, the answer, the model that
  answered, the tools it called), deleted with its session.
- feedback: one rating (+1 or -1, optional comment) per turn, a later one replacing
  it; it keeps the turn's agent, model and tools, so that statistics outlive the
  pruned session (the retention sweep drops the rater and the comment from old ones).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ._model import StoreError
from ._tx import Tx

T = TypeVar("T")

#: The longest question or answer kept with a turn (the history has the whole of it).
TURN_TEXT_CHARS: Final = 4000
#: The most ratings any statistic reads (the most recent ones).
MAX_STAT_ROWS: Final = 5000


class MemoryQuotaError(StoreError):
    """The owner already holds as many memories as allowed."""


@attrs.frozen(kw_only=True)
class MemoryRecord:
    memory_id: str
    subject: str
    agent: str
    content: str
    session_id: str | None
    created_at: float


@attrs.frozen(kw_only=True)
class TurnRecord:
    turn_id: str
    session_id: str
    subject: str
    agent: str
    model: str | None
    tools: tuple[str, ...]
    question: str
    answer: str
    created_at: float


@attrs.frozen(kw_only=True)
class Rating:
    """One rating, as statistics and reports read it."""

    turn_id: str
    agent: str
    model: str | None
    tools: tuple[str, ...]
    rating: int
    created_at: float


_MEMORY_COLS = "memory_id, subject, agent, content, session_id, created_at"
_TURN_COLS = "turn_id, session_id, subject, agent, model, tools, question, answer, created_at"


def _memory(row: Any) -> MemoryRecord:
    return MemoryRecord(memory_id=row[0], subject=row[1], agent=row[2], content=row[3], session_id=row[4],
                        created_at=row[5])


def _turn(row: Any) -> TurnRecord:
    return TurnRecord(turn_id=row[0], session_id=row[1], subject=row[2], agent=row[3], model=row[4],
                      tools=tuple(json.loads(row[5])), question=row[6], answer=row[7], created_at=row[8])


def _lock_owner(tx: Tx, subject: str, agent: str) -> None:
    if tx.dialect == "postgresql":
        # Serialises writers of one owner across instances until the transaction ends.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext(?), hashtext(?))", (subject, agent)).fetchone()


class LearningOps:
    """Mixed into :class:`~engine.store.Store`: the operations above."""

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[..., T], *args: Any) -> T: ...

    # --- memories ---

    async def remember(self, subject: str, agent: str, content: str, *, max_items: int,
                       session_id: str | None = None, expired_before: float | None = None,
                       now: float | None = None) -> tuple[MemoryRecord, bool]:
        """Keep ``content`` for ``(subject, agent)``; returns the record and whether it is new
        (the same text remembered again is not stored twice). Deletes the owner's memories
        created before ``expired_before`` first. Raises :class:`MemoryQuotaError`."""
        if not content:
            raise ValueError("a memory is a non-empty text")
        at = time.time() if now is None else now
        record = MemoryRecord(memory_id=uuid.uuid4().hex, subject=subject, agent=agent, content=content,
                              session_id=session_id, created_at=at)

        def work(tx: Tx) -> tuple[MemoryRecord, bool]:
            with tx.transaction():
                _lock_owner(tx, subject, agent)
                if expired_before is not None:
                    tx.execute("DELETE FROM memories WHERE subject = ? AND agent = ? AND created_at < ?",
                               (subject, agent, expired_before))
                same = tx.execute(f"SELECT {_MEMORY_COLS} FROM memories WHERE subject = ? AND agent = ? "
                                  "AND content = ?", (subject, agent, content)).fetchone()
                if same is not None:
                    return _memory(same), False
                held = tx.execute("SELECT COUNT(*) FROM memories WHERE subject = ? AND agent = ?",
                                  (subject, agent)).fetchone()[0]
                if held >= max_items:
                    raise MemoryQuotaError(
                        f"{subject} already has {held} memories for agent {agent!r}, the most allowed "
                        f"({max_items}): forget some first (/memory forget)")
                tx.execute(f"INSERT INTO memories ({_MEMORY_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                           attrs.astuple(record))
            return record, True

        return await self._run(work)

    async def expire_memories(self, agent: str, before: float) -> int:
        """Delete every subject's memories of ``agent`` created before ``before`` (retention)."""
        def work(tx: Tx) -> int:
            with tx.transaction():
                return tx.execute("DELETE FROM memories WHERE agent = ? AND created_at < ?", (agent, before)).rowcount

        return await self._run(work)

    async def memories(self, subject: str, agent: str | None = None, *,
                       since: float | None = None, limit: int | None = None) -> tuple[MemoryRecord, ...]:
        """``subject``'s memories (of ``agent``, or of every agent), oldest first; with
        ``limit``, the most recent ``limit`` of them (still oldest first)."""
        clauses, params = ["subject = ?"], [subject]
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(since)  # type: ignore[arg-type]
        tail = f" LIMIT {int(limit)}" if limit is not None else ""

        def work(tx: Tx) -> tuple[MemoryRecord, ...]:
            rows = tx.execute(f"SELECT {_MEMORY_COLS} FROM memories WHERE {' AND '.join(clauses)} "
                              f"ORDER BY created_at DESC, memory_id DESC{tail}", params).fetchall()
            return tuple(reversed([_memory(r) for r in rows]))

        return await self._run(work)

    async def forget(self, subject: str, *, memory_id: str | None = None, agent: str | None = None) -> int:
        """Delete ``subject``'s memory ``memory_id``, or all of theirs (of ``agent`` when
        given); returns how many went (0 for an id that is not theirs)."""
        clauses, params = ["subject = ?"], [subject]
        if memory_id is not None:
            clauses.append("memory_id = ?")
            params.append(memory_id)
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)

        def work(tx: Tx) -> int:
            with tx.transaction():
                return tx.execute(f"DELETE FROM memories WHERE {' AND '.join(clauses)}", params).rowcount

        return await self._run(work)

    # --- turns and their ratings ---

    async def record_turn(self, *, turn_id: str, session_id: str, subject: str, agent: str, model: str | None,
                          tools: tuple[str, ...], question: str, answer: str,
                          now: float | None = None) -> TurnRecord:
        """Keep one answered turn (texts cut at :data:`TURN_TEXT_CHARS`)."""
        record = TurnRecord(turn_id=turn_id, session_id=session_id, subject=subject, agent=agent, model=model,
                            tools=tuple(dict.fromkeys(tools)), question=question[:TURN_TEXT_CHARS],
                            answer=answer[:TURN_TEXT_CHARS], created_at=time.time() if now is None else now)
        row = (*attrs.astuple(record)[:5], json.dumps(list(record.tools)), *attrs.astuple(record)[6:])

        def work(tx: Tx) -> None:
            tx.execute(f"INSERT INTO turns ({_TURN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self._run(work)
        return record

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        def work(tx: Tx) -> TurnRecord | None:
            row = tx.execute(f"SELECT {_TURN_COLS} FROM turns WHERE turn_id = ?", (turn_id,)).fetchone()
            return None if row is None else _turn(row)

        return await self._run(work)

    async def rate_turn(self, turn: TurnRecord, rating: int, comment: str | None = None, *,
                        now: float | None = None) -> bool:
        """Record ``turn``'s rating (+1 or -1), replacing an earlier one; returns whether
        one was replaced. The caller has checked that the rater owns the turn."""
        if rating not in (-1, 1) or isinstance(rating, bool):
            raise ValueError("a rating is +1 or -1")
        at = time.time() if now is None else now
        row = (turn.turn_id, turn.subject, turn.agent, turn.model, json.dumps(list(turn.tools)), rating, comment, at)

        def work(tx: Tx) -> bool:
            with tx.transaction():
                before = tx.execute("SELECT 1 FROM feedback WHERE turn_id = ?", (turn.turn_id,)).fetchone()
                tx.execute(
                    "INSERT INTO feedback (turn_id, subject, agent, model, tools, rating, comment, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (turn_id) DO UPDATE SET rating = excluded.rating, "
                    "comment = excluded.comment, created_at = excluded.created_at", row)
            return before is not None

        return await self._run(work)

    async def ratings(self, agent: str | None = None, *, limit: int | None = MAX_STAT_ROWS) -> tuple[Rating, ...]:
        """The most recent ratings (of ``agent``, or of all; ``limit`` None: every one), newest first."""
        where, params = ("WHERE agent = ? ", [agent]) if agent is not None else ("", [])
        tail = "" if limit is None else f" LIMIT {int(limit)}"

        def work(tx: Tx) -> tuple[Rating, ...]:
            rows = tx.execute(f"SELECT turn_id, agent, model, tools, rating, created_at FROM feedback {where}"
                              f"ORDER BY created_at DESC, turn_id{tail}", params).fetchall()
            return tuple(Rating(turn_id=r[0], agent=r[1], model=r[2], tools=tuple(json.loads(r[3])), rating=r[4],
                                created_at=r[5]) for r in rows)

        return await self._run(work)

    async def anonymise_ratings(self, before: float) -> int:
        """Drop who rated and what they wrote from ratings older than ``before`` (retention);
        the rating itself stays for the statistics. Returns how many changed."""
        def work(tx: Tx) -> int:
            with tx.transaction():
                return tx.execute("UPDATE feedback SET subject = '', comment = NULL "
                                  "WHERE created_at < ? AND (subject != '' OR comment IS NOT NULL)",
                                  (before,)).rowcount

        return await self._run(work)

    async def turns_by_model(self) -> dict[tuple[str, str | None], int]:
        """How many kept turns each (agent, model) answered."""
        def work(tx: Tx) -> dict[tuple[str, str | None], int]:
            rows = tx.execute("SELECT agent, model, COUNT(*) FROM turns GROUP BY agent, model").fetchall()
            return {(row[0], row[1]): int(row[2]) for row in rows}

        return await self._run(work)

    async def turn_count(self, agent: str) -> int:
        """How many turns of ``agent`` are kept (a seeded routing numbers its draws with it)."""
        def work(tx: Tx) -> int:
            return int(tx.execute("SELECT COUNT(*) FROM turns WHERE agent = ?", (agent,)).fetchone()[0])

        return await self._run(work)

    async def rated_examples(self, agent: str, *, subject: str | None, limit: int) -> tuple[TurnRecord, ...]:
        """The most recent turns of ``agent`` rated +1 (``subject``'s only, unless None), oldest first."""
        mine, params = ("AND t.subject = ? ", [agent, subject]) if subject is not None else ("", [agent])
        cols = ", ".join(f"t.{c}" for c in _TURN_COLS.split(", "))

        def work(tx: Tx) -> tuple[TurnRecord, ...]:
            rows = tx.execute(
                f"SELECT {cols} FROM feedback f JOIN turns t ON t.turn_id = f.turn_id "
                f"WHERE f.agent = ? AND f.rating = 1 {mine}AND t.answer != '' "
                f"ORDER BY f.created_at DESC, f.turn_id LIMIT {int(limit)}", params).fetchall()
            return tuple(reversed([_turn(r) for r in rows]))

        return await self._run(work)
