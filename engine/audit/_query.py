"""Reading the audit log: the last records, and records matching filters.

Plain blocking functions over their own short-lived connection: the CLI calls them
directly, async code through ``trio.to_thread`` (:meth:`AuditLog.tail`). Readers never
block the writer (WAL). They return records as stored; whether those are genuine is
:func:`engine.audit.verify`'s question.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

from ..config.units import parse_duration
from ._db import connect_reader
from ._record import COLUMNS, KINDS, AuditRecord

__all__ = ["parse_time", "query", "tail"]

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_records"
_DAYS = re.compile(r"(\d+(?:\.\d+)?)\s*d")


def parse_time(text: str, *, now: float | None = None) -> float:
    """A point in time as a UTC epoch, from an ISO timestamp (``2025-01-31T12:00:00Z``,
    ``2025-01-31`` — no zone means UTC) or a duration back from now (``90s``, ``10m``,
    ``2h``, ``7d``). Raises ``ValueError`` naming the accepted forms."""
    text = text.strip()
    current = time.time() if now is None else now
    days = _DAYS.fullmatch(text)
    if days:
        return current - float(days[1]) * 86400
    try:
        return current - float(parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO time (2025-01-31T12:00:00Z) nor a duration (10m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def tail(state_dir: str | os.PathLike[str], n: int = 20) -> list[AuditRecord]:
    """The last ``n`` records, oldest first. Raises :class:`AuditNotFoundError`."""
    if n < 0:
        raise ValueError("n must be >= 0")
    conn = connect_reader(state_dir)
    try:
        rows = conn.execute(f"{_SELECT} ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
    finally:
        conn.close()
    return [AuditRecord.from_row(row) for row in reversed(rows)]


def query(
    state_dir: str | os.PathLike[str],
    *,
    subject: str | None = None,
    tool: str | None = None,
    outcome: str | None = None,
    since: float | str | None = None,
    until: float | str | None = None,
    kind: str | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Records matching every given filter, oldest first.

    ``tool`` matches the target (a tool name or a resource URI). ``since``/``until``
    bound ``time`` (inclusive/exclusive): an epoch, or a string for :func:`parse_time`.
    ``limit`` keeps the most recent matches. Raises :class:`AuditNotFoundError`, or
    ``ValueError`` for an unknown kind or a bad time.
    """
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("subject", subject), ("target", tool), ("outcome", outcome), ("kind", kind)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}")
    now = time.time()
    for op, bound in ((">=", since), ("<", until)):
        if bound is not None:
            clauses.append(f"time {op} ?")
            params.append(parse_time(bound, now=now) if isinstance(bound, str) else float(bound))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    conn = connect_reader(state_dir)
    try:
        if limit is None:
            rows = conn.execute(f"{_SELECT}{where} ORDER BY seq", params).fetchall()
        else:
            rows = conn.execute(f"{_SELECT}{where} ORDER BY seq DESC LIMIT ?", [*params, limit]).fetchall()
            rows.reverse()
    finally:
        conn.close()
    return [AuditRecord.from_row(row) for row in rows]
