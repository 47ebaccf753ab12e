"""Spawning a launcher from the Trio thread and driving its pipes, shared by backends.

Why not `trio.run_process`: it forks from a worker thread, and a sandbox started with
`--die-with-parent` (PR_SET_PDEATHSIG) is killed when that *thread* idles out after
10 s (SANDBOX-NOTES trap 5). Here the launcher is started with `os.posix_spawn` (glibc:
clone(CLONE_VM|CLONE_VFORK), ~1 ms, no preexec_fn, no fork of the engine's memory)
directly from the thread running Trio, which lives as long as the run. Every signal
disposition is reset to default, the signal mask is cleared, the child gets its own
session, and inherited descriptors other than the ones passed are closed.

Closing: the child gets its descriptors at 0, 1, 2 and the numbers asked for, then
glibc's ``posix_spawn_file_actions_addclosefrom_np`` (glibc >= 2.34, close_range in the
child) closes every descriptor above the highest of them. The engine never lists its own
descriptors: a scan of /proc/self/fd grows with open connections (23 ms at 10,000
descriptors, on the event loop). `os.posix_spawn` offers no close-from action, so that
one call goes through ctypes (`_native_spawn`); where the symbol is missing the launcher
is started by `os.posix_spawn` with the scan, as before.

`drive()` then writes stdin, reads stdout (capped) and stderr (tail) concurrently and
waits for the exit through a pidfd, then reaps with `wait4` for the rusage.

Cancellation and errors: whatever ends `drive()` early (its wall-clock timeout, Trio
cancellation, an exception), the backend's `terminate` coroutine runs shielded and the
launcher is reaped before `drive()` returns or re-raises, so no zombie is left; the
descriptors are closed in every case.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._errors import SpawnError

_SIGNALS_TO_DEFAULT = tuple(
    sig for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP)
)
_READ_CHUNK = 65536


@attrs.define(eq=False)
class Child:
    """A spawned launcher. Mutable runtime state; owned by one `drive()` call."""

    pid: int
    pidfd: int
    stdin: int
    stdout: int
    stderr: int
    extra: dict[int, int]  # fd number in the child -> our read end
    status: int | None = None
    rusage: Any = None

    @property
    def reaped(self) -> bool:
        return self.status is not None

    def try_reap(self) -> bool:
        if self.status is None:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.status, self.rusage = status, rusage
        return True

    async def wait(self) -> None:
        """Wait for exit and reap. Cancellable; reaping is idempotent."""
        while not self.try_reap():
            await trio.lowlevel.wait_readable(self.pidfd)

    def signal(self, sig: int) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def spawn(path: str, argv: list[str], env: dict[str, str], *, fds: dict[int, int]) -> Child:
    """Start `path` with pipes on 0/1/2, `fds` (child fd -> our fd) passed as given, and
    one read pipe per child fd listed with a value of -1 (its read end is ours).

    Raises SpawnError when the launcher cannot be started.
    """
    ours: list[int] = []  # read/write ends we keep
    theirs: list[int] = []  # ends only the child uses; closed here once it has them

    def pipe(*, child_reads: bool) -> tuple[int, int]:
        read, write = os.pipe()  # O_CLOEXEC: nothing leaks into other children
        ours.append(write if child_reads else read)
        theirs.append(read if child_reads else write)
        return read, write

    try:
        stdin_r, stdin_w = pipe(child_reads=True)
        stdout_r, stdout_w = pipe(child_reads=False)
        stderr_r, stderr_w = pipe(child_reads=False)
        extra: dict[int, int] = {}
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, stdin_r, 0),
            (os.POSIX_SPAWN_DUP2, stdout_w, 1),
            (os.POSIX_SPAWN_DUP2, stderr_w, 2),
        ]
        for target, source in sorted(fds.items()):
            if source == -1:
                extra[target], source = pipe(child_reads=False)
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
        try:
            native = _native()
            if native is not None:
                pid = native.spawn(path, argv, env, actions, close_from=max({2, *fds}) + 1)
            else:
                pid = os.posix_spawn(
                    path,
                    argv,
                    env,
                    file_actions=actions + _inheritable_closes({0, 1, 2, *fds}),
                    setsid=True,
                    setsigdef=_SIGNALS_TO_DEFAULT,
                    setsigmask=(),
                )
        except OSError as exc:
            raise SpawnError(exc.errno, f"cannot start {path}: {exc.strerror}") from None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
    except BaseException:
        for fd in ours:
            _close(fd)
        raise
    finally:
        for fd in theirs:
            _close(fd)
    return Child(pid, pidfd, stdin_w, stdout_r, stderr_r, extra)


def _inheritable_closes(keep: set[int]) -> list[tuple[int, ...]]:
    """Close actions for every inheritable descriptor not in `keep` (the fallback: a scan)."""
    actions: list[tuple[int, ...]] = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                pass
    return actions


# glibc's posix_spawn flags (spawn.h)
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
_OPAQUE = 1024  # bytes reserved for each glibc object (file actions 80, attr 336, sigset 128)


class _NativeSpawn:
    """glibc's posix_spawn through ctypes, with a close-from file action."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc = libc
        for name in ("posix_spawn", "posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy",
                     "posix_spawn_file_actions_adddup2", "posix_spawn_file_actions_addclosefrom_np",
                     "posix_spawnattr_init", "posix_spawnattr_destroy", "posix_spawnattr_setflags",
                     "posix_spawnattr_setsigdefault", "posix_spawnattr_setsigmask", "sigfillset",
                     "sigemptyset", "sigdelset"):  # fmt: skip
            getattr(libc, name).restype = ctypes.c_int
        # every disposition to default (SIGKILL/SIGSTOP cannot be named), an empty mask
        self.sigdefault = ctypes.create_string_buffer(_OPAQUE)
        self.sigmask = ctypes.create_string_buffer(_OPAQUE)
        libc.sigfillset(self.sigdefault)
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            libc.sigdelset(self.sigdefault, int(sig))
        libc.sigemptyset(self.sigmask)

    def spawn(
        self, path: str, argv: list[str], env: dict[str, str], actions: list[tuple[int, ...]], *, close_from: int
    ) -> int:
        libc = self.libc
        file_actions = ctypes.create_string_buffer(_OPAQUE)
        attr = ctypes.create_string_buffer(_OPAQUE)
        _check(libc.posix_spawn_file_actions_init(file_actions))
        try:
            _check(libc.posix_spawnattr_init(attr))
            try:
                for _kind, source, target in actions:
                    _check(libc.posix_spawn_file_actions_adddup2(file_actions, source, target))
                _check(libc.posix_spawn_file_actions_addclosefrom_np(file_actions, close_from))
                flags = _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK
                _check(libc.posix_spawnattr_setflags(attr, ctypes.c_short(flags)))
                _check(libc.posix_spawnattr_setsigdefault(attr, self.sigdefault))
                _check(libc.posix_spawnattr_setsigmask(attr, self.sigmask))
                c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
                entries = [os.fsencode(f"{k}={v}") for k, v in env.items()]
                c_env = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
                pid = ctypes.c_int()
                _check(libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), file_actions, attr, c_argv, c_env))
                return pid.value
            finally:
                libc.posix_spawnattr_destroy(attr)
        finally:
            libc.posix_spawn_file_actions_destroy(file_actions)


def _check(code: int) -> None:
    # posix_spawn and its helpers return an error number instead of setting errno
    if code != 0:
        raise OSError(code, os.strerror(code))


@functools.cache
def _native() -> _NativeSpawn | None:
    """The ctypes spawner, or None where glibc lacks posix_spawn_file_actions_addclosefrom_np."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.posix_spawn_file_actions_addclosefrom_np  # noqa: B018  # glibc >= 2.34
        return _NativeSpawn(libc)
    except (OSError, AttributeError):
        return None


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


@attrs.define(eq=False)
class Collected:
    """What `drive()` gathered from one launcher."""

    stdout: bytearray = attrs.Factory(bytearray)
    stderr: bytearray = attrs.Factory(bytearray)
    extra: dict[int, bytearray] = attrs.Factory(dict)
    truncated: bool = False
    timed_out: bool = False
    started: float = 0.0
    ended: float = 0.0


async def _write_all(fd: int, data: bytes) -> None:
    stream = trio.lowlevel.FdStream(fd)
    try:
        async with stream:
            view = memoryview(data)
            for offset in range(0, len(view), _READ_CHUNK * 4):
                await stream.send_all(view[offset : offset + _READ_CHUNK * 4])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the tool exited or closed stdin without reading it all: not our failure


async def _read_capped(fd: int, into: bytearray, limit: int, *, tail: bool) -> bool:
    """Read to EOF keeping `limit` bytes (the head, or the tail); True when some were cut."""
    cut = False
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some(_READ_CHUNK):
            if tail:
                into += chunk
                if len(into) > limit:
                    del into[: len(into) - limit]
                    cut = True
            else:
                room = limit - len(into)
                if room > 0:
                    into += chunk[:room]
                if len(chunk) > room:
                    cut = True
    return cut


async def drive(
    child: Child,
    stdin_data: bytes,
    *,
    timeout_s: float,
    max_stdout: int,
    max_stderr: int,
    terminate: Callable[[Child, Collected], Awaitable[None]],
    on_extra: Callable[[int, bytes], Awaitable[None]] | None = None,
) -> Collected:
    """Feed, read and wait for `child`; kill it through `terminate` on timeout or cancel.

    `terminate(child, collected)` must end the whole sandbox and reap `child`; it runs
    inside a shielded scope. After the launcher exits, the pipes get one second to
    reach EOF (a sandbox's processes are all gone by then; this only bounds the wait).
    `on_extra(target, chunk)` is awaited with each chunk read from an extra descriptor,
    before the next is read.
    """
    collected = Collected(started=trio.current_time())
    collected.extra = {target: bytearray() for target in child.extra}
    streams_done = trio.Event()

    async def read_outputs() -> None:
        async def stdout() -> None:
            collected.truncated = await _read_capped(
                child.stdout, collected.stdout, max_stdout, tail=False
            )

        async def stderr() -> None:
            await _read_capped(child.stderr, collected.stderr, max_stderr, tail=True)

        async def extra(target: int, fd: int) -> None:
            async with trio.lowlevel.FdStream(fd) as stream:
                while chunk := await stream.receive_some(_READ_CHUNK):
                    buffer = collected.extra[target]
                    if len(buffer) < 1 << 20:
                        buffer += chunk
                    if on_extra is not None:
                        await on_extra(target, bytes(chunk))

        async with trio.open_nursery() as inner:
            inner.start_soon(stdout)
            inner.start_soon(stderr)
            for target, fd in child.extra.items():
                inner.start_soon(extra, target, fd)
        streams_done.set()

    owned = [child.stdin, child.stdout, child.stderr, *child.extra.values()]
    try:
        async with trio.open_nursery() as nursery:
            owned.clear()  # the streams below own (and close) the descriptors from now on
            nursery.start_soon(_write_all, child.stdin, stdin_data)
            nursery.start_soon(read_outputs)
            with trio.move_on_after(timeout_s):
                await child.wait()
            if not child.reaped:
                collected.timed_out = True
                with trio.CancelScope(shield=True):
                    await terminate(child, collected)
            collected.ended = trio.current_time()
            with trio.move_on_after(1.0):
                await streams_done.wait()
            nursery.cancel_scope.cancel()
    except BaseException:
        if not child.reaped:
            with trio.CancelScope(shield=True):
                await terminate(child, collected)
        raise
    finally:
        for fd in owned:
            _close(fd)
        if child.pidfd >= 0:
            _close(child.pidfd)
            child.pidfd = -1
    if not collected.ended:
        collected.ended = trio.current_time()
    return collected


async def wait_or_kill(child: Child, grace_s: float) -> None:
    """Wait up to `grace_s` for `child` to exit; then SIGKILL and reap it. Never raises."""
    with trio.move_on_after(grace_s):
        await child.wait()
    if not child.reaped:
        child.signal(signal.SIGKILL)
        await child.wait()
