"""`open_session(spec)`: a long-lived sandboxed program with its stdin and stdout as streams.

The same sandbox as one call of `run()` — the backend's own `start()` builds the
launcher (bubblewrap flags, rlimits, uid drop, Landlock), a fresh work dir is made and
removed — but instead of feeding a JSON document and collecting the output, the caller
talks to the program for as long as the session is open (an MCP server over stdio, for
instance). Only `argv` programs can be sessions.

- `Session.stdin` / `Session.stdout` are Trio streams on the program's pipes; stderr is
  read in the background and its last `max_stderr_bytes` kept (`stderr_tail()`), so a
  chatty program can never block on a full stderr pipe.
- `Session.exited` is set once the sandbox has ended (its launcher reaped), for whatever
  reason; `exit_message()` then says how.
- `spec.timeout_s` is not applied: a session lives until its context exits. RLIMIT_CPU
  covers the program's whole life.

Resource handling: leaving the `async with` — normally, on an exception, or on Trio
cancellation — closes stdin, kills the whole sandbox the way the backend kills a call
(SIGTERM, a grace, then SIGKILL of the namespace's pid 1 / the supervisor), reaps it,
closes every descriptor and removes the work dir, all shielded and bounded, before the
exception or `trio.Cancelled` goes on. `kill()` does the killing part early.

Errors: `SpecError` for a Spec that is not an argv program, `SpawnError` when the
sandbox cannot start, `IsolationUnavailable` from `backend_for()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import trio

from ._call import call_dir, reachable_spec
from ._errors import SpecError
from ._process import Child, Collected
from ._result import decode_text
from ._run import backend_for
from ._spec import Spec

_READ_CHUNK = 65536


@attrs.define(eq=False)
class Session:
    """A running sandboxed program. Mutable runtime state owned by `open_session`."""

    backend: str
    stdin: trio.lowlevel.FdStream
    stdout: trio.lowlevel.FdStream
    exited: trio.Event
    _child: Child
    _stderr: bytearray
    _max_stderr: int
    _kill: Any  # async () -> None, set by open_session
    _status: dict[int, bytearray]  # the launcher's status pipes, as read so far

    def stderr_tail(self) -> str:
        """The last `max_stderr_bytes` the program wrote to stderr, decoded leniently."""
        return decode_text(bytes(self._stderr))

    @property
    def pid(self) -> int:
        """Host pid of the launcher (bwrap, or the process backend's supervisor)."""
        return self._child.pid

    def exit_message(self) -> str | None:
        """How the sandbox ended ("exited with code 1", "killed by SIGKILL"), None while it runs."""
        status = self._child.status
        if status is None:
            return None
        for report in _reports(self._status):
            # The program's own ending, as the launcher reported it (bwrap's "exit-code",
            # the supervisor's "exit_code"/"signal"), is more precise than the launcher's.
            if report.get("signal") is not None:
                return f"killed by {_signal_name(int(report['signal']))}"
            code = report.get("exit_code", report.get("exit-code"))
            if code is not None:
                status = (int(code) & 0xFF) << 8
        if os.WIFSIGNALED(status):
            return f"killed by {_signal_name(os.WTERMSIG(status))}"
        code = os.WEXITSTATUS(status)
        if 128 < code < 128 + 65:  # bwrap reports a tool killed by signal N as 128 + N
            return f"killed by {_signal_name(code - 128)}"
        return f"exited with code {code}"

    async def kill(self) -> None:
        """End the sandbox now (idempotent; shielded). The context still cleans up."""
        await self._kill()


def _reports(pipes: dict[int, bytearray]) -> list[dict[str, Any]]:
    found = []
    for data in pipes.values():
        for line in bytes(data).splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and ("exit_code" in item or "exit-code" in item or "signal" in item):
                found.append(item)
    return found


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group holding exactly one exception as that exception.

    The nursery inside a context manager is an implementation detail: the caller sees its
    own error (or ours) as raised, not wrapped. A group of several stays a group.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for item in group.exceptions:
        if isinstance(item, BaseExceptionGroup):
            yield from _leaves(item)
        else:
            yield item


@contextlib.asynccontextmanager
async def open_session(spec: Spec, *, backend: Any = None) -> AsyncIterator[Session]:
    """Start `spec.argv` in a sandbox and yield its Session; kill it on the way out.

    `backend` defaults to `backend_for(spec)`; it must offer `start(spec, work_root=,
    work_dir=) -> Child` and the `_terminate(child, collected)` every built-in backend
    has. See the module docstring for cancellation and cleanup.
    """
    if spec.python is not None or not spec.argv:
        raise SpecError("a session runs an argv program, not a python function")
    if backend is None:
        backend = backend_for(spec)
    async with call_dir(spec) as (work_root, work_dir):
        spec = reachable_spec(spec, work_root)
        child: Child = backend.start(spec, work_root=work_root, work_dir=work_dir)
        collected = Collected(started=trio.current_time())
        collected.extra = {target: bytearray() for target in child.extra}
        stdin = trio.lowlevel.FdStream(child.stdin)
        stdout = trio.lowlevel.FdStream(child.stdout)
        stderr = bytearray()
        exited = trio.Event()
        waiter = trio.CancelScope()
        # The pipe readers are shielded until the sandbox is dead: an outer cancellation
        # must not close the status pipe before the kill has read the sandbox's pid 1 in it.
        pipes: list[trio.CancelScope] = []

        def pipe_scope() -> trio.CancelScope:
            pipes.append(trio.CancelScope(shield=True))
            return pipes[-1]
        waiter_done = trio.Event()
        killed = trio.Event()
        readers_left = [1 + len(child.extra)]
        readers_done = trio.Event()

        def reader_finished() -> None:
            readers_left[0] -= 1
            if readers_left[0] == 0:
                readers_done.set()

        async def kill() -> None:
            with trio.CancelScope(shield=True):
                if killed.is_set():
                    await exited.wait()
                    return
                killed.set()
                # Only one task may wait on the pidfd: stop the waiter before terminating.
                waiter.cancel()
                await waiter_done.wait()
                with contextlib.suppress(OSError):
                    stdin.close()
                if not child.reaped:
                    await backend._terminate(child, collected)
                exited.set()

        async def wait_exit() -> None:
            try:
                with waiter:
                    await child.wait()
                    exited.set()
            finally:
                waiter_done.set()

        async def read_stderr() -> None:
            try:
                with pipe_scope():
                    async with trio.lowlevel.FdStream(child.stderr) as stream:
                        while chunk := await stream.receive_some(_READ_CHUNK):
                            stderr.extend(chunk)
                            if len(stderr) > spec.max_stderr_bytes:
                                del stderr[: len(stderr) - spec.max_stderr_bytes]
            finally:
                reader_finished()

        async def read_extra(target: int, fd: int) -> None:
            # Status lines (bwrap's child pid, the supervisor's report): small, kept whole.
            try:
                with pipe_scope():
                    async with trio.lowlevel.FdStream(fd) as stream:
                        while chunk := await stream.receive_some(_READ_CHUNK):
                            buffer = collected.extra[target]
                            if len(buffer) < 1 << 20:
                                buffer.extend(chunk)
            finally:
                reader_finished()

        session = Session(
            backend=getattr(backend, "name", "unknown"), stdin=stdin, stdout=stdout, exited=exited,
            child=child, stderr=stderr, max_stderr=spec.max_stderr_bytes, kill=kill,
            status=collected.extra,
        )
        try:
            with single_errors():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait_exit)
                    nursery.start_soon(read_stderr)
                    for target, fd in child.extra.items():
                        nursery.start_soon(read_extra, target, fd)
                    try:
                        yield session
                    finally:
                        await kill()
                        # The sandbox is gone, so its pipes reach EOF: let the readers take
                        # the last of stderr (bounded: a leaked descriptor must not hang us).
                        with trio.move_on_after(1.0, shield=True):
                            await readers_done.wait()
                        for scope in pipes:
                            scope.cancel()
                        nursery.cancel_scope.cancel()
        finally:
            for stream in (stdin, stdout):
                with contextlib.suppress(OSError):
                    stream.close()
            if child.pidfd >= 0:
                with contextlib.suppress(OSError):
                    os.close(child.pidfd)
                child.pidfd = -1
