"""A pool of psycopg 3 connections, used from worker threads, with Trio cancellation.

Why threads: psycopg's async connection (like asyncpg) needs asyncio and fails under
Trio; the sync connection in ``trio.to_thread`` works (~0.3 ms a query, MCP-NOTES).

:meth:`Database.run` takes a token of a ``trio.CapacityLimiter`` no larger than the pool
(so no thread ever waits inside the pool for long), then runs the function in a worker
thread on one connection (autocommit mode: each statement commits unless the function
opens ``conn.transaction()``).

Cancellation: the thread is never abandoned while it holds a connection — it runs
shielded. When the caller's scope is cancelled meanwhile, ``conn.cancel_safe()`` is
called from another worker thread: PostgreSQL cancels the running statement, the
function's transaction rolls back, the thread returns, the connection goes back to the
pool usable, and the cancellation propagates. A function that had already committed
stays committed (as with SQLite: read back if that matters). Every session also has a
``statement_timeout``, so a statement can never hold a connection forever.

Errors: :class:`PgUnavailableError` when the server cannot be reached, refuses the
login, or drops the connection (the message names the server, never the password);
other ``psycopg.Error`` pass through for the caller to map.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from ..errors import ScalyticsError

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

T = TypeVar("T")

#: How long a connection attempt may take before the server counts as unreachable.
CONNECT_TIMEOUT_S: Final = 10
#: How long a call waits for a pooled connection. Calls never queue inside the pool (the
#: limiter is no larger than it), so this only runs out when no connection can be made:
#: the database is down, and the caller should hear so soon.
POOL_WAIT_S: Final = 3.0
#: The longest one statement may run (server side); a lock wait counts.
STATEMENT_TIMEOUT_MS: Final = 30_000
#: How long the cancel request itself may take once the caller was cancelled.
CANCEL_TIMEOUT_S: Final = 5.0


class PgError(ScalyticsError):
    """Root of the PostgreSQL layer's errors."""


class PgUnavailableError(PgError):
    """The database cannot be reached, refused the login, or went away."""


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def describe(url: str) -> str:
    """``user@host:port/dbname`` for messages: the password never appears."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        return "postgresql (unparsable URL)"
    return f"{parts.username or ''}@{parts.hostname or 'localhost'}:{port}{parts.path or '/'}"


def connect_kwargs(application: str) -> dict[str, Any]:
    return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "application_name": application,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}


def connect_once(url: str, application: str) -> psycopg.Connection[Any]:
    """One direct connection (blocking), the reason a failure is spelled out: a pool
    only reports that it timed out, not that the password was wrong."""
    import psycopg

    try:
        return psycopg.connect(url, **connect_kwargs(application))
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PgUnavailableError(f"cannot connect to PostgreSQL {describe(url)}: {reason}") from None


@attrs.define(eq=False)
class Database:
    """A connection pool to one PostgreSQL database. ``await Database.open(url)``;
    :meth:`aclose` when done. Safe to share between tasks."""

    url: str = attrs.field(repr=describe)
    _pool: psycopg_pool.ConnectionPool[Any] | None = attrs.field(repr=False)
    _limiter: trio.CapacityLimiter = attrs.field(repr=False)

    @classmethod
    async def open(cls, url: str, *, max_size: int = 8, application: str = "sconnect") -> Database:
        """Connect (a first connection proves the server, the login and the database are
        right) and open a pool of up to ``max_size`` connections. Raises
        :class:`PgUnavailableError` with the reason."""
        from psycopg_pool import ConnectionPool

        def work() -> ConnectionPool[Any]:
            connect_once(url, application).close()
            pool: ConnectionPool[Any] = ConnectionPool(
                url, min_size=1, max_size=max_size, open=False, kwargs=connect_kwargs(application),
                timeout=POOL_WAIT_S, name=application,
                # A connection the server dropped (restart, failover) is replaced when taken,
                # instead of failing the call that happens to get it.
                check=ConnectionPool.check_connection)
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            return pool

        pool = await trio.to_thread.run_sync(work)
        return cls(url, pool, trio.CapacityLimiter(max_size))

    async def aclose(self) -> None:
        """Close the pool (idempotent); waits for connections in use to come back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a pooled connection, in the calling (worker) thread: for
        a caller that already runs in one and cancels nothing (the audit writer's shielded
        commits). Errors as :meth:`run`."""
        import psycopg
        import psycopg_pool

        pool = self._pool
        if pool is None:
            raise PgError(f"{describe(self.url)}: the database pool is closed")
        try:
            with pool.connection() as conn:
                return fn(conn, *args)
        except psycopg_pool.PoolTimeout:
            raise PgUnavailableError(f"PostgreSQL {describe(self.url)}: no connection available") from None
        except psycopg.OperationalError as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise
            raise PgUnavailableError(f"PostgreSQL {describe(self.url)} is unavailable: "
                                     f"{str(exc).strip() or type(exc).__name__}") from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a pooled connection in a worker thread (module docstring
        for cancellation). Raises :class:`PgUnavailableError` when the database cannot
        be used, ``PgError`` when this object is closed."""
        import psycopg

        in_use: list[psycopg.Connection[Any]] = []
        guard = threading.Lock()

        def work() -> T:
            def tracked(conn: psycopg.Connection[Any]) -> T:
                with guard:
                    in_use.append(conn)
                try:
                    return fn(conn, *args)
                finally:
                    with guard:
                        in_use.clear()

            return self.run_blocking(tracked)

        async def cancel() -> None:
            def send() -> None:
                with guard:
                    conn = in_use[0] if in_use else None
                if conn is not None:
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)

            with trio.move_on_after(CANCEL_TIMEOUT_S + 1, shield=True):
                try:
                    await trio.to_thread.run_sync(send)
                except psycopg.Error:
                    pass  # the statement ends anyway (statement_timeout); nothing to add

        async with self._limiter:
            done = trio.Event()
            result: list[Any] = []

            async def call() -> None:
                with trio.CancelScope(shield=True):
                    try:
                        result.append((True, await trio.to_thread.run_sync(work)))
                    except Exception as exc:  # noqa: BLE001 - handed to the caller below
                        result.append((False, exc))
                    finally:
                        done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                try:
                    await done.wait()
                except trio.Cancelled:
                    await cancel()
                    raise
            ok, value = result[0]
            if not ok:
                raise value
            return value  # type: ignore[no-any-return]
