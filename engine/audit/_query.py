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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..config.units import parse_duration
from ._db import connect_reader
from ._record import COLUMNS, KINDS, AuditRecord

__all__ = ["parse_time", "query", "query_rows", "tail", "tail_rows"]

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


Executor = Callable[[str, list[Any]], list[Any]]


def tail(state_dir: str | os.PathLike[str], n: int = 20) -> list[AuditRecord]:
    """The last ``n`` records, oldest first. Raises :class:`AuditNotFoundError`."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return _on_sqlite(state_dir, lambda execute: tail_rows(execute, n))


def tail_rows(execute: Executor, n: int) -> list[AuditRecord]:
    """:func:`tail` through ``execute(sql, params) -> rows`` (SQLite or PostgreSQL)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rows = execute(f"{_SELECT} ORDER BY seq DESC LIMIT ?", [n])
    return [AuditRecord.from_row(row) for row in reversed(rows)]


def _on_sqlite(state_dir: str | os.PathLike[str], read: Callable[[Executor], list[AuditRecord]]) -> list[AuditRecord]:
    conn = connect_reader(state_dir)
    try:
        return read(lambda sql, params: conn.execute(sql, params).fetchall())
    finally:
        conn.close()


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
    filters: dict[str, Any] = {"subject": subject, "tool": tool, "outcome": outcome, "since": since, "until": until,
               "kind": kind, "limit": limit}
    _where(**filters)  # a bad filter is refused before the database is opened
    return _on_sqlite(state_dir, lambda execute: query_rows(execute, **filters))


def query_rows(execute: Executor, *, limit: int | None = None, **filters: Any) -> list[AuditRecord]:
    """:func:`query` through ``execute(sql, params) -> rows`` (SQLite or PostgreSQL)."""
    where, params = _where(limit=limit, **filters)
    if limit is None:
        rows = execute(f"{_SELECT}{where} ORDER BY seq", params)
    else:
        rows = execute(f"{_SELECT}{where} ORDER BY seq DESC LIMIT ?", [*params, limit])
        rows.reverse()
    return [AuditRecord.from_row(row) for row in rows]


def _where(*, subject: str | None = None, tool: str | None = None, outcome: str | None = None,
           since: float | str | None = None, until: float | str | None = None, kind: str | None = None,
           limit: int | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
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
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params
