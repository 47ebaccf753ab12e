"""The three lifecycles of an MCP server used as a tool.

- `call_once` (``per_call``, and every lifecycle when no hub runs one): start the
  server in the caller's task, call, kill. The caller waits for the start-up.
- `SingleUsePool` (``single_use``): `pool_size` sandboxes started ahead of calls by
  slot tasks; a call takes a ready one, uses it once, and its slot kills it and starts
  the next in the background. A slot whose server died while idle is skipped.
- `SharedServer` (``shared``): one long-lived server; calls share it concurrently.
  A crash, garbage on stdout or a call that times out breaks it; it is restarted.

Every start lists the tools and compares each exposed one with its pin (`on_mismatch`
reports the difference; the tool is refused on that server, the others still work).
A server that fails to start, or dies soon after starting, is retried with a growing
pause (`restart_backoff`, 0.5 s by default, doubling up to 30 s) so a broken server
cannot spin.

Cancellation: a cancelled call on a single-use sandbox kills that sandbox before the
cancellation goes on (the slot task is told, and awaited, shielded and bounded); after a
completed call the slot kills it in the background, so the result is not held up. On a
shared server a cancelled call only abandons its request (the SDK tells the server);
the server keeps serving the others. Cancelling a pool or shared server's `run` (hub
shutdown, a reload that removes or changes the file) kills its sandboxes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
import trio.lowlevel

import sandbox

from ..config.model import UpstreamRef
from ._connection import Connection, open_connection
from ._errors import StartFailed

log = logging.getLogger(__name__)

# (exposed tool's ref, reason) -> audit/log it; called once per start per mismatch.
MismatchHook = Callable[[UpstreamRef, str], Awaitable[None]]
_MAX_BACKOFF_S = 30.0
# A shared server that stops sooner than this after starting counts towards the back-off.
_QUICK_STOP_S = 10.0


def error_result(status: str, message: str, stderr: str = "", wall: float = 0.0) -> sandbox.Result:
    return sandbox.Result(
        status=status,  # type: ignore[arg-type]
        output=None,
        stderr_tail=stderr,
        exit_code=None,
        signal=None,
        wall_time_s=round(wall, 6),
        cpu_time_s=0.0,
        peak_memory_bytes=0,
        truncated=False,
        backend="mcp",
        message=message,
    )


async def checked_call(
    conn: Connection, ref: UpstreamRef, arguments: Mapping[str, Any], timeout_s: float
) -> sandbox.Result:
    """Call `ref.tool` on `conn` unless its definition no longer matches the pin."""
    mismatch = conn.mismatch(ref.tool, ref.pinned.digest)
    if mismatch is not None:
        return error_result("error", f"refused: {mismatch}")
    return await conn.call(ref.tool, arguments, timeout_s=timeout_s)


def _as_start_failure(exc: Exception) -> StartFailed:
    if isinstance(exc, StartFailed):
        return exc
    return StartFailed(f"the MCP server's sandbox could not start: {exc}")


async def report_mismatches(conn: Connection, refs: list[UpstreamRef], on_mismatch: MismatchHook | None) -> None:
    """Log (and hand to `on_mismatch`, e.g. the audit) each exposed tool that no longer
    matches its pin. The tool is refused whatever happens here; a failing hook is logged."""
    for ref in refs:
        reason = conn.mismatch(ref.tool, ref.pinned.digest)
        if reason is not None:
            log.error("%s: %s: the tool is refused until it is pinned again", ref.file, reason)
            if on_mismatch is not None:
                try:
                    await on_mismatch(ref, reason)
                except Exception:
                    log.exception("%s: recording the pin mismatch of %r failed", ref.file, ref.tool)


async def call_once(
    ref: UpstreamRef, spec: sandbox.Spec, arguments: Mapping[str, Any], on_mismatch: MismatchHook | None = None
) -> sandbox.Result:
    """``per_call``: a fresh server for this call, started now, killed after it."""
    started = trio.current_time()
    try:
        async with open_connection(
            ref.server.command, spec, startup_timeout_s=float(ref.server.startup_timeout)
        ) as conn:
            await report_mismatches(conn, [ref], on_mismatch)
            result = await checked_call(conn, ref, arguments, spec.timeout_s)
        # The caller waited for the start too: the call's time includes it.
        return attrs.evolve(result, wall_time_s=round(trio.current_time() - started, 6))
    except StartFailed as exc:
        return error_result("error", str(exc), exc.stderr, trio.current_time() - started)


@attrs.define(eq=False)
class _Slot:
    conn: Connection
    released: trio.Event = attrs.Factory(trio.Event)
    closed: trio.Event = attrs.Factory(trio.Event)


async def _backoff(first_s: float, failures: int) -> None:
    await trio.sleep(min(_MAX_BACKOFF_S, first_s * math.pow(2, failures - 1)))


@attrs.define(eq=False)
class SingleUsePool:
    """``single_use``: sandboxes started ahead of calls, each used for one call."""

    command: tuple[str, ...]
    spec: sandbox.Spec
    size: int
    startup_timeout_s: float
    refs: list[UpstreamRef]
    on_mismatch: MismatchHook | None = None
    restart_backoff_s: float = 0.5
    last_error: StartFailed | None = None
    _send: trio.MemorySendChannel[_Slot] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[_Slot] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[_Slot](self.size)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep `size` sandboxes ready until cancelled (then every one is killed)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.size):
                nursery.start_soon(self._slot)
            task_status.started()

    async def _slot(self) -> None:
        failures = 0
        crashes = 0  # servers that died while idle, in a row: they back off like failed starts
        while True:
            slot: _Slot | None = None
            try:
                async with open_connection(self.command, self.spec, startup_timeout_s=self.startup_timeout_s) as conn:
                    failures, self.last_error = 0, None
                    await report_mismatches(conn, self.refs, self.on_mismatch)
                    slot = _Slot(conn)
                    await self._send.send(slot)
                    # Idle until a call has used it (or the server dies while waiting).
                    async with trio.open_nursery() as idle:
                        for event in (slot.released, conn.session.exited, conn.fault.event):
                            idle.start_soon(_set_then_cancel, event, idle.cancel_scope)
                    crashes = 0 if slot.released.is_set() else crashes + 1
            except (StartFailed, sandbox.SandboxError) as exc:
                # A sandbox that cannot start (isolation unavailable, spawn failure) is a
                # failed start too: it must not take the hub's nursery down.
                failures += 1
                self.last_error = _as_start_failure(exc)
                log.warning("MCP server %s did not start: %s", self.command[0], exc)
            finally:
                if slot is not None:
                    slot.closed.set()
            if failures or crashes:
                await _backoff(self.restart_backoff_s, failures + crashes)

    async def call(self, ref: UpstreamRef, arguments: Mapping[str, Any]) -> sandbox.Result:
        started = trio.current_time()
        for _ in range(self.size + 1):  # skip slots whose server died while idle
            slot = None
            with trio.move_on_after(self.startup_timeout_s):
                slot = await self._receive.receive()
            if slot is None:
                why = f"no sandbox of this MCP server became ready within {self.startup_timeout_s:g}s"
                stderr = ""
                if self.last_error is not None:
                    why += f" (last start: {self.last_error})"
                    stderr = self.last_error.stderr
                return error_result("error", why, stderr, trio.current_time() - started)
            if slot.conn.broken.is_set() or slot.conn.session.exited.is_set() or slot.conn.fault.event.is_set():
                slot.released.set()
                continue
            try:
                result = await checked_call(slot.conn, ref, arguments, self.spec.timeout_s)
            except BaseException:
                slot.released.set()
                # Cancelled (or failed): the sandbox is killed before the caller goes on.
                with trio.move_on_after(5, shield=True):
                    await slot.closed.wait()
                raise
            # Done with it: its slot task kills it and starts the next one meanwhile.
            slot.released.set()
            return result
        return error_result("error", "every pre-started sandbox of this MCP server had died", "")


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@attrs.define(eq=False)
class SharedServer:
    """``shared``: one long-lived server, restarted whenever it breaks."""

    command: tuple[str, ...]
    spec: sandbox.Spec
    startup_timeout_s: float
    refs: list[UpstreamRef]
    on_mismatch: MismatchHook | None = None
    restart_backoff_s: float = 0.5
    last_error: StartFailed | None = None
    starts: int = 0
    # Start attempts that ended (ready or failed): a caller waiting since attempt N
    # reports the failure of a later one instead of waiting for the next try.
    attempts: int = 0
    _current: Connection | None = None
    _changed: trio.Event = attrs.Factory(trio.Event)

    def _attempt_ended(self) -> None:
        self.attempts += 1
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the server running until cancelled (then it is killed)."""
        task_status.started()
        failures = 0
        crashes = 0  # stops soon after a start, in a row: they back off like failed starts
        while True:
            try:
                async with open_connection(self.command, self.spec, startup_timeout_s=self.startup_timeout_s) as conn:
                    failures, self.last_error = 0, None
                    self.starts += 1
                    await report_mismatches(conn, self.refs, self.on_mismatch)
                    self._current = conn
                    self._attempt_ended()
                    ready_at = trio.current_time()
                    async with trio.open_nursery() as alive:
                        for event in (conn.broken, conn.session.exited, conn.fault.event):
                            alive.start_soon(_set_then_cancel, event, alive.cancel_scope)
                    crashes = crashes + 1 if trio.current_time() - ready_at < _QUICK_STOP_S else 0
                    log.warning("shared MCP server %s stopped (%s): restarting", self.command[0], conn.failure())
            except (StartFailed, sandbox.SandboxError) as exc:
                failures += 1
                self.last_error = _as_start_failure(exc)
                log.warning("shared MCP server %s did not start: %s", self.command[0], exc)
                self._attempt_ended()  # callers waiting for this start report its failure
            finally:
                self._current = None
            if failures or crashes:
                await _backoff(self.restart_backoff_s, failures + crashes)

    async def call(self, ref: UpstreamRef, arguments: Mapping[str, Any]) -> sandbox.Result:
        started = trio.current_time()
        waiting_since = self.attempts
        failed = False
        with trio.move_on_after(self.startup_timeout_s):
            while (conn := self._current) is None or conn.broken.is_set():
                await self._changed.wait()
                if self._current is None and self.attempts > waiting_since and self.last_error is not None:
                    failed = True  # the start this call waited for failed: say why now
                    break
        if conn is None or conn.broken.is_set():
            error = self.last_error
            if failed and error is not None:
                return error_result("error", str(error), error.stderr, trio.current_time() - started)
            why = f"the shared MCP server was not ready within {self.startup_timeout_s:g}s"
            if error is not None:
                why += f" (last start: {error})"
            return error_result("error", why, error.stderr if error else "", trio.current_time() - started)
        return await checked_call(conn, ref, arguments, self.spec.timeout_s)
