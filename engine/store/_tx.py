"""The statement interface the store's operations are written against, for both backends.

An operation is a plain function ``work(tx, ...)`` run in a worker thread. It writes SQL
with ``?`` placeholders (the PostgreSQL backend rewrites them to ``%s``; no statement of
the store contains a literal ``?``), reads rows as tuples, and opens
``tx.transaction()`` around multi-statement writes. A unique or foreign-key violation
surfaces as :class:`IntegrityViolation` whatever the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class IntegrityViolation(Exception):
    """A constraint refused the statement; ``foreign_key`` tells which kind."""

    def __init__(self, *, foreign_key: bool) -> None:
        super().__init__("foreign key" if foreign_key else "unique")
        self.foreign_key = foreign_key


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    @property
    def dialect(self) -> str: ...  # "sqlite" | "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def transaction(self) -> AbstractContextManager[Any]: ...
