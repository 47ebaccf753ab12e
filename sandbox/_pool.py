"""`PoolBackend` (``isolation: pool``): warm bubblewrap sandboxes with pre-forked workers.

One long-lived bubblewrap sandbox per isolation profile — the same flags as the
namespaces backend (`_bwrap.options`, `--seccomp`, `--disable-userns`, started as
`SANDBOX_UID` through setpriv when root, empty environment, options from a memfd) —
runs the fork server (`_forkserver`) under ``python3 -S -I``. A profile is everything
of a Spec that shapes the sandbox (program, packages, paths, env, network, cwd, memory
for the tmpfs sizes and the cgroup, work root); the per-call limits (time, CPU, file
size, files, processes, output) travel with each call. A workspace is one of the paths,
so each subject's calls get their own pool sandbox.

Workers: the engine asks the server for workers (`_top_up`: up to K ready, forks
requested while a call is in flight only when fewer than two are left, the rest once it
has returned: `_refills`) and holds each one it gets itself — the write end of its request pipe, its stdin,
stdout and stderr, and a reply socket to the server. A call takes a ready worker, writes
its arguments to its stdin and then its rlimits to its request pipe (the go-ahead the
worker blocks on before it runs anything of the tool), waits for the status packet the
server sends on the reply socket after killing the worker's group and reaping it, and
reads stdout (capped) and stderr (tail) itself: in the common case (the tool done within
a few milliseconds, its output within the pipes) all at once after the status, with one
wake-up of the event loop for the whole call (`_Exchange`). No message to the server starts a
call; every call runs in a fresh worker process that is gone after it. A worker found
dead when taken (it died in set-up) is replaced, at most twice for one call.

Memory cgroup: where one is in force (`_cgroup.probe()` when the pool set opens), every
worker gets a cgroup of its own when it arrives, before it is ready: the server passes a
pidfd of it and the pool set's `_cgroup.Admitter` (one thread for all its pools: the
kernel's cgroup migration may wait for an RCU grace period) makes the cgroup, reads the
worker's host pid from the pidfd and moves the worker in, several arrivals in one go; the
worker is ready once the outcome is back on the event loop (picked up when a call next
takes a worker, or at once while calls wait for one). The worker has run nothing of a
call by then, and runs nothing until a call writes its limits, so the tool starts inside
the cgroup, which holds nothing else and is removed after that one call (right after
it has returned: the status says the call's processes are all dead, so it is empty). The call reads
the cgroup's OOM kills and peak after the status packet (the worker is reaped by then).
A worker that could not be moved runs its call on RLIMIT_AS and the sized tmpfs alone,
and the result says so.

Ownership: pools live in a `PoolSet` opened with `open_pools()` (an async context
manager holding a nursery; the server opens it around its hub). Each pool's task owns
its bubblewrap process: it drains its output, reads the server's messages, notices its
death (the next call starts a fresh one), and on close shuts the control socket (the
server ends), then SIGKILLs the sandbox's pid 1 if needed and reaps bubblewrap, waits
for the workers still with the admitter, lets its ready workers go, removes their
cgroups and the pool's directory; the admitter's thread ends after the last pool. A
call made outside any `open_pools()` opens a temporary set for itself (correct, not
fast).

Timeout and cancellation: a packet on the worker's reply socket makes the server
SIGKILL the worker's process group (no member can leave it: setsid/setpgid are denied);
the call then waits (shielded, bounded) for the status packet, so the tool is dead and
reaped before `run` returns or re-raises `trio.Cancelled`.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import json
import logging
import marshal
import os
import resource
import select
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import trio

from . import _bwrap, _cgroup, _seccomp
from ._call import Go, build_result, encode_arguments, memfd, reachable_spec
from ._errors import SpawnError, SpecError
from ._limits import rlimits
from ._pool_seccomp import worker_filter
from ._process import Child, Collected, _read_capped, spawn, wait_or_kill
from ._result import Result
from ._spec import Spec
from ._workdir import (
    default_work_root,
    make_call_dir,
    prepare_work_root,
    remove_call_dir,
    sandbox_user,
    staged_copy,
)

log = logging.getLogger("sandbox.pool")

_ARGS_FD = 3
_STATUS_FD = 4
_CONTROL_FD = 5
_SECCOMP_FD = 6
_CONFIG_FD = 7
_POOL_FILES = ("_forkserver.py", "_runner.py", "_landlock.py")
_SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc")
_SETUP_FAILED = 125
# The fork server imported as a module, not run as a script: its compiled form staged
# beside it is used (a script is compiled at every start, and the compiler's garbage
# stays in the server's heap, which every fork and exit of a worker pays for).
_BOOTSTRAP = f"import sys; sys.path.insert(0, {_bwrap.RUNNER_MOUNT!r}); import _forkserver; _forkserver.main()"
_START_TIMEOUT_S = 20.0
_KILL_WAIT_S = 10.0
_LOW = 2  # ready workers below which a fork is asked for while a call is in flight
_DEAD_WORKERS = 3  # workers found dead, one after another, before a call gives up
# How long a call waits for its status alone before it looks into its output pipes: a
# tool found writing (or blocked on a full pipe) is then read as it writes; one found
# silent is waited for again, twice as long each time up to _QUIET_MAX_S.
_QUIET_S = 0.003
_QUIET_MAX_S = 0.05
_STATUS = struct.Struct("=iqq")  # the server's status packet (`_forkserver.STATUS`)
_PID = struct.Struct("=i")
_CHUNK = 65536

# the pool set of the running service (set by `open_pools`)
_current: contextvars.ContextVar[PoolSet | None] = contextvars.ContextVar("sandbox_pools", default=None)

# per-call fields: everything else of a Spec is the pool's profile
_PER_CALL = ("timeout_s", "cpu_time_s", "max_output_bytes", "max_stderr_bytes", "max_open_files",
             "max_processes", "max_file_bytes")  # fmt: skip


@functools.lru_cache(maxsize=256)
def profile(spec: Spec) -> Spec:
    """The Spec with its per-call fields at their defaults: one pool per distinct value."""
    defaults = Spec(argv=("x",))
    return attrs.evolve(spec, **{name: getattr(defaults, name) for name in _PER_CALL})


_RLIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE,
            "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE}  # fmt: skip


@functools.lru_cache(maxsize=256)
def _limits(spec: Spec) -> bytes:
    """A call's go-ahead: its rlimits as the worker sets them, (resource, soft, hard)
    each (soft = hard; CPU: SIGXCPU at the soft limit, SIGKILL one second later)."""
    return marshal.dumps([
        (_RLIMITS[name], value, value + 1 if name == "cpu" else value) for name, value in rlimits(spec).items()
    ])  # fmt: skip


@functools.cache
def _pool_runner_dir(work_root: str) -> str:
    """Copies of the fork server and its two siblings, readable by the sandbox user."""
    return staged_copy(work_root, _POOL_FILES, ".pool", bytecode=True)


@functools.lru_cache(maxsize=256)
def check_paths(spec: Spec, work_root: str) -> None:
    """SpecError when a declared path holds the work root (and so the pool's directory):
    through it, concurrent calls could reach each other's directories."""
    for path in (*spec.writable_paths, *spec.readable_paths):
        inside = os.path.normpath(path).rstrip("/") + "/"
        if (work_root.rstrip("/") + "/").startswith(inside):
            raise SpecError(
                f"{path!r} holds the pool's work root {work_root!r}: concurrent calls could "
                "reach each other's directories through it; choose another work_root"
            )


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _rights(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += struct.unpack(f"={usable // 4}i", payload[:usable])
    return fds


@attrs.define(eq=False)
class _Worker:
    """A ready worker as the engine holds it. Mutable; owned by its pool until a call
    takes it, then by that call, which closes it (a closed reply socket, or request pipe,
    lets a worker go: the server kills it, or it exits)."""

    pid: int  # in the sandbox
    request: int  # write end of its request pipe: a call's limits are its go-ahead
    stdin: int
    stdout: int
    stderr: int
    reply: int  # SOCK_SEQPACKET to the server: the status comes here; a packet sent kills
    cgroup: _cgroup.CallCgroup | None = None
    problem: str | None = None  # why it is not in its cgroup, where the host has them
    ended: bool = False  # its status came: it and every process of its group are dead

    def close(self) -> None:
        for fd in (self.request, self.stdin, self.stdout, self.stderr, self.reply):
            if fd >= 0:
                _close(fd)
        self.request = self.stdin = self.stdout = self.stderr = self.reply = -1

    def gone(self) -> bool:
        """Whether it has already ended: its status (or the server's end) is waiting."""
        poller = select.poll()  # not select(): the engine may hold descriptors past 1024
        poller.register(self.reply, select.POLLIN)
        return bool(poller.poll(0))

    async def kill_and_wait(self) -> None:
        """Have the server kill its group; wait (shielded, bounded) for its status: it has
        been reaped then. For a worker taken but never given its call."""
        with trio.CancelScope(shield=True):
            if self.reply < 0:
                return
            with contextlib.suppress(OSError):
                os.write(self.reply, b"k")
            with trio.move_on_after(_KILL_WAIT_S):
                await trio.lowlevel.wait_readable(self.reply)

    def last_words(self) -> str:
        """The last line it wrote to stderr, read without waiting (for a dead worker)."""
        try:
            os.set_blocking(self.stderr, False)
            text = os.read(self.stderr, 8192).decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return text[-1] if text else ""


@attrs.define(eq=False)
class _Waiter:
    """A call waiting for a worker: `_Pool._hand` fills `worker` and sets `event`; set
    with no worker, the call looks again (the pool died, or forks failed)."""

    event: trio.Event = attrs.Factory(trio.Event)
    worker: _Worker | None = None


@attrs.define(eq=False)
class _Exchange:
    """One call's traffic with its worker, driven by the calling task alone.

    The common case takes one wake-up of the event loop: the arguments fit in the stdin
    pipe and the tool's output in the pipes, so the task waits for the status packet
    alone (`wait_status`) and then takes what the pipes hold (`take_outputs`): every
    process of the call is dead by then, so nothing more can come. Waking up for each
    write and each end of stream of the worker costs the loop a turn each, and on one
    core each such wake-up preempts the worker. A call not answered within `_QUIET_S`
    has its pipes looked into: silent, it is waited for again (twice as long each time,
    up to `_QUIET_MAX_S`); writing (or blocked on a full pipe), it is read as it writes.

    That (and arguments larger than the pipe) is the other way: the worker's stdin,
    stdout, stderr and reply socket go into a private epoll set whose own descriptor is
    what the task waits on (`pump`): one task per call, none per stream. Each descriptor
    is unregistered and closed once done (EOF, broken pipe, the status).
    """

    worker: _Worker
    collected: Collected
    max_stdout: int
    max_stderr: int
    poller: select.epoll | None = None  # made when the call is watched stream by stream
    left: memoryview = memoryview(b"")  # stdin not written yet
    status: dict[str, Any] | None = None
    outputs: int = 2  # stdout and stderr not at EOF yet

    def start(self, stdin_data: bytes, limits: bytes) -> None:
        """Write the arguments (what fits), then the go-ahead."""
        worker = self.worker
        self.left = memoryview(stdin_data)
        if self._feed():  # the common case: it fits in the pipe
            _close(worker.stdin)
            worker.stdin = -1
        # The pipe is empty and the message is small: this write never blocks. Closed,
        # the pipe reads EOF after it.
        try:
            os.write(worker.request, limits)
        except OSError:
            pass  # the worker died in set-up; its status tells
        os.close(worker.request)
        worker.request = -1

    def quiet(self) -> bool:
        """Whether the call can wait for its status alone: all of its input is written."""
        return self.worker.stdin < 0

    async def wait_status(self) -> None:
        """Wait for the status packet alone, then take what the outputs hold. Cancellable
        (`_drive` gives it `_QUIET_S`, then more while the outputs stay silent)."""
        await trio.lowlevel.wait_readable(self.worker.reply)
        self._on_reply()
        self.take_outputs()

    def take_outputs(self) -> bool:
        """Read what the pipes hold, up to their end (the server made our ends
        non-blocking); whether there was anything (data or an end)."""
        worker, collected = self.worker, self.collected
        taken = 0
        try:
            while worker.stdout >= 0:
                taken += self._read(worker.stdout, collected.stdout, self.max_stdout, tail=False)
        except BlockingIOError:
            pass  # nothing (more) yet; after the status: a writer outside the call's group
        try:
            while worker.stderr >= 0:
                taken += self._read(worker.stderr, collected.stderr, self.max_stderr, tail=True)
        except BlockingIOError:
            pass
        return taken > 0

    def _watch(self) -> None:
        """Watch each stream of the call from now on (`pump`)."""
        if self.poller is not None:
            return
        worker = self.worker
        self.poller = poller = select.epoll(4)
        for fd in (worker.stdout, worker.stderr, worker.reply):
            if fd >= 0:
                poller.register(fd, select.EPOLLIN)
        if worker.stdin >= 0:
            poller.register(worker.stdin, select.EPOLLOUT)

    def _feed(self) -> bool:
        """Write what the pipe takes; True once stdin is done with (all written, or the
        tool closed it)."""
        worker = self.worker
        try:
            while self.left:
                self.left = self.left[os.write(worker.stdin, self.left) :]
        except BlockingIOError:
            return False
        except OSError:
            pass  # the tool exited or closed stdin without reading it all: not our failure
        return True

    def _done(self, fd: int) -> None:
        if self.poller is not None:
            try:  # (not contextlib.suppress: this runs three times a call)
                self.poller.unregister(fd)
            except (OSError, ValueError):
                pass
        _close(fd)

    def _read(self, fd: int, into: bytearray, limit: int, *, tail: bool) -> int:
        """One read of an output: 1 for its end, else the bytes read (BlockingIOError
        when it holds nothing yet)."""
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            self._done(fd)
            self.outputs -= 1
            if fd == self.worker.stdout:
                self.worker.stdout = -1
            else:
                self.worker.stderr = -1
            return 1
        if tail:
            into += chunk
            if len(into) > limit:
                del into[: len(into) - limit]
        else:
            room = limit - len(into)
            if room > 0:
                into += chunk[:room]
            if len(chunk) > room:
                self.collected.truncated = True
        return len(chunk)

    def _on_reply(self) -> None:
        worker = self.worker
        try:
            data = os.read(worker.reply, 64)
        except OSError:
            data = b""
        if len(data) == _STATUS.size:
            worker.ended = True
            status, cpu_us, peak_kib = _STATUS.unpack(data)
            self.status = {"status": status, "cpu_time_s": cpu_us / 1e6, "peak_memory_bytes": peak_kib * 1024}
        else:  # the server (and with it the sandbox) is gone
            self.status = {"gone": True}
        self._done(worker.reply)
        worker.reply = -1

    async def pump(self, done: Callable[[], bool]) -> None:
        """Move data until `done()`. Cancellable at each wait."""
        self._watch()
        worker, collected, poller = self.worker, self.collected, self.poller
        assert poller is not None
        while not done():
            await trio.lowlevel.wait_readable(poller.fileno())
            for fd, _events in poller.poll(0):
                try:
                    if fd == worker.stdout:
                        self._read(fd, collected.stdout, self.max_stdout, tail=False)
                    elif fd == worker.stderr:
                        self._read(fd, collected.stderr, self.max_stderr, tail=True)
                    elif fd == worker.reply:
                        self._on_reply()
                    elif fd == worker.stdin and self._feed():
                        self._done(fd)
                        worker.stdin = -1
                except BlockingIOError:
                    pass  # nothing after all: the next wake-up tells

    def has_status(self) -> bool:
        return self.status is not None

    def outputs_done(self) -> bool:
        return self.outputs == 0

    async def kill_and_wait(self) -> None:
        """Have the server kill the worker's group; wait (shielded, bounded) for its status."""
        with trio.CancelScope(shield=True):
            if self.worker.reply >= 0:
                with contextlib.suppress(OSError):
                    os.write(self.worker.reply, b"k")
                with trio.move_on_after(_KILL_WAIT_S):
                    await self.pump(self.has_status)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()
        self.worker.close()


@attrs.define(eq=False)
class _Pool:
    """One warm sandbox. Mutable runtime state, owned by its task in a PoolSet."""

    spec: Spec  # the profile (its packages made reachable when the sandbox starts)
    backend: PoolBackend
    control: socket.socket | None = None  # engine end, non-blocking
    child: Child | None = None
    pid1: int | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    dead: bool = False
    active: int = 0
    stderr: bytearray = attrs.Factory(bytearray)
    pid1_fd: int = -1  # pidfd of the sandbox's pid 1, once it is known alive
    controller: _cgroup.Controller | None = None  # where each worker gets its call's cgroup
    ready: collections.deque[_Worker] = attrs.Factory(collections.deque)
    pending: int = 0  # workers asked of the server, not ready yet (forking or admitting)
    # calls waiting for a worker, served in the order they came (a caller finding a
    # ready worker takes it only when nobody waits: arrivals go to waiters first)
    waiters: collections.deque[_Waiter] = attrs.Factory(collections.deque)
    fork_error: str | None = None  # the server's last "cannot fork", until a worker comes
    # cgroups of workers not taken by a call (ready, or dead before it): removed at the end
    cgroups: set[_cgroup.CallCgroup] = attrs.Factory(set)
    nursery: trio.Nursery | None = None
    admitter: _cgroup.Admitter | None = None  # the pool set's: puts arriving workers in their cgroups
    admitting: int = 0  # workers handed to the admitter and not back yet
    settled: trio.Event | None = None  # set when `admitting` drops to 0 (while the pool ends)
    ended: bool = False  # its end has removed its cgroups: a late one is removed at once
    refill: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)  # `_refills` waits here
    removals: list[_cgroup.CallCgroup] = attrs.Factory(list)  # empty cgroups of ended calls, for `_refills`

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the sandbox, report ready, own it until cancelled or dead.

        Raises SpawnError (before `started`) when it cannot start.
        """
        work_root = prepare_work_root(self.spec.work_root or default_work_root())
        spec = reachable_spec(self.spec, work_root)
        pool_dir = make_call_dir(work_root)
        # Without an admitter (none was in force when the pool set opened) no cgroups.
        self.controller = _cgroup.probe().controller if self.admitter is not None else None
        try:
            with self.scope:
                await self._run(spec, work_root, pool_dir, task_status)
        finally:
            self.dead = True
            self._wake()
            with trio.CancelScope(shield=True):
                await self._stop()
                # Workers still with the admitter come back (dead now, their cgroups
                # made); every worker died with the sandbox: let the ready ones go, then
                # their cgroups can be removed.
                if self.admitter is not None:
                    with trio.move_on_after(_KILL_WAIT_S), self.admitter.wants():
                        while self.admitting:
                            self.settled = trio.Event()
                            await self.settled.wait()
                while self.ready:
                    self.ready.popleft().close()
                for cgroup in list(self.cgroups):
                    await _cgroup.remove(cgroup)
                self.cgroups.clear()
                self.ended = True
                with trio.move_on_after(30):
                    await trio.to_thread.run_sync(remove_call_dir, pool_dir)

    async def _run(self, spec: Spec, work_root: str, pool_dir: str, task_status: Any) -> None:
        runner = _pool_runner_dir(work_root)
        backend = self.backend
        options = _bwrap.options(
            spec, work_dir=pool_dir, runner_dir=runner, seccomp_fd=_SECCOMP_FD,
            disable_userns=backend.disable_userns,
        )  # fmt: skip
        read = [*_SYSTEM_READ, _bwrap.RUNNER_MOUNT, *spec.readable_paths]
        sys_path = []
        if spec.python_packages:
            read.append(_bwrap.PACKAGES_MOUNT)
            sys_path.append(_bwrap.PACKAGES_MOUNT)
        config = {
            "k": backend.workers,
            "pool_dir": pool_dir,
            "sys_path": sys_path,
            "mode": "call" if spec.python is not None else "exec",
            "target": spec.python,
            "argv": list(spec.argv),
            "env": dict(spec.env),
            "cwd": _bwrap.check_cwd(spec, pool_dir) if spec.cwd is not None else None,
            "landlock": {"read": read, "write": list(spec.writable_paths), "block_tcp": not spec.network},
            "filter": worker_filter(network=spec.network),
            "pidfds": self.controller is not None,
        }
        launcher = [
            backend.bwrap, "--args", str(_ARGS_FD), "--json-status-fd", str(_STATUS_FD),
            backend.python, "-S", "-I", "-c", _BOOTSTRAP, str(_CONFIG_FD), str(_CONTROL_FD),
        ]  # fmt: skip
        user = sandbox_user()
        if user is not None:
            if backend.setpriv is None:
                raise AssertionError("backend_for() never builds this without setpriv")
            launcher = [backend.setpriv, f"--reuid={user[0]}", f"--regid={user[1]}",
                        "--clear-groups", "--", *launcher]  # fmt: skip
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        owned = [theirs.detach()]
        try:
            owned.append(memfd(b"".join(arg.encode() + b"\0" for arg in options), "bwrap-args"))
            owned.append(memfd(_seccomp.compiled(), "seccomp-bpf"))
            owned.append(memfd(marshal.dumps(config), "pool-config"))
            fds = {_CONTROL_FD: owned[0], _ARGS_FD: owned[1], _SECCOMP_FD: owned[2],
                   _CONFIG_FD: owned[3], _STATUS_FD: -1}  # fmt: skip
            self.child = spawn(launcher[0], launcher, {}, fds=fds)
        except BaseException:
            ours.close()
            raise
        finally:
            for fd in owned:
                os.close(fd)
        ours.setblocking(False)
        self.control = ours
        child = self.child
        os.close(child.stdin)
        stderr_done = trio.Event()
        started = False

        async def stderr() -> None:
            await self._drain(child.stderr, self.stderr)
            stderr_done.set()

        # Errors are raised after the nursery, not inside it: a caller gets SpawnError
        # itself, not a group around it.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain, child.stdout, None)
            nursery.start_soon(stderr)
            nursery.start_soon(self._status, child.extra[_STATUS_FD])
            ready = b""
            with trio.move_on_after(_START_TIMEOUT_S):
                ready = await self._receive()
            if ready == b"R":
                started = True
                # The sandbox's pid 1 is alive now (its child, the server, just spoke): a
                # pidfd on it lets the stop wait for the whole namespace to be gone.
                pid1 = self._sandbox_init(child)
                if pid1 is not None:
                    with contextlib.suppress(OSError):
                        self.pid1_fd = os.pidfd_open(pid1)
                self.nursery = nursery
                self._top_up(backend.workers)
                nursery.start_soon(self._messages)
                nursery.start_soon(self._refills)
                task_status.started()
                await child.wait()  # only an unexpected death gets past this
            else:
                with trio.move_on_after(2.0):
                    await child.wait()
                    await stderr_done.wait()
            nursery.cancel_scope.cancel()
        if not started:
            tail = bytes(self.stderr).decode("utf-8", "replace").strip().splitlines()[-1:]
            raise SpawnError(f"the pool sandbox did not start: {tail[0] if tail else 'no ready message'}")

    async def _drain(self, fd: int, keep: bytearray | None) -> None:
        await _read_capped(fd, keep if keep is not None else bytearray(), 8192, tail=True)

    async def _status(self, fd: int) -> None:
        buffer = bytearray()
        async with trio.lowlevel.FdStream(fd) as stream:
            while chunk := await stream.receive_some(4096):
                buffer += chunk
                for line in bytes(buffer).splitlines():
                    pid = _decode(line).get("child-pid")
                    if isinstance(pid, int):
                        self.pid1 = pid

    async def _stop(self) -> None:
        """End the sandbox: SIGKILL its pid 1 (the kernel then kills every process of the
        namespace) and wait until pid 1 itself is gone, which is after the last of them.

        bubblewrap's monitor exits as soon as the server does, before its pid 1 has torn
        the namespace down: waiting for bubblewrap alone would return too early.
        """
        if self.control is not None:
            self.control.close()
            self.control = None
        child = self.child
        if child is None:
            return
        if self.pid1_fd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pid1_fd, signal.SIGKILL)
            with trio.move_on_after(30.0):
                await trio.lowlevel.wait_readable(self.pid1_fd)
            os.close(self.pid1_fd)
            self.pid1_fd = -1
        elif not child.try_reap():
            # Stopped before it was ready. bubblewrap is our unreaped child, so its child
            # (pid 1) has not been reaped and its pid cannot have been reused.
            pid1 = self._sandbox_init(child)
            pid1_fd = -1
            if pid1 is not None:
                with contextlib.suppress(OSError):
                    pid1_fd = os.pidfd_open(pid1)
            if pid1_fd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pid1_fd, signal.SIGKILL)
                with trio.move_on_after(30.0):
                    await trio.lowlevel.wait_readable(pid1_fd)
                os.close(pid1_fd)
        await wait_or_kill(child, 30.0)
        if child.pidfd >= 0:
            os.close(child.pidfd)
            child.pidfd = -1

    def _sandbox_init(self, child: Child) -> int | None:
        """The host pid of the sandbox's pid 1: from bwrap's status, else its only child
        (a pool stopped before the status line was read)."""
        if self.pid1 is not None:
            return self.pid1
        try:
            with open(f"/proc/{child.pid}/task/{child.pid}/children") as handle:
                children = handle.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    async def _receive(self) -> bytes:
        """The server's next message without descriptors (b"" when it is gone)."""
        assert self.control is not None
        while True:
            await trio.lowlevel.wait_readable(self.control)
            try:
                return self.control.recv(256)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def _messages(self) -> None:
        """Read the server's messages: new workers, failed forks, its end."""
        control = self.control
        assert control is not None and self.nursery is not None
        space = socket.CMSG_SPACE(6 * 4)
        wanted = 6 if self.controller is not None else 5
        while True:
            await trio.lowlevel.wait_readable(control)
            try:
                data, ancdata, _flags, _addr = control.recvmsg(256, space, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                continue
            except OSError:
                data, ancdata = b"", []
            fds = _rights(ancdata)
            kind = data[:1]
            if kind == b"W" and len(data) == 1 + _PID.size and len(fds) == wanted:
                request, stdin, stdout, stderr, reply = fds[:5]
                worker = _Worker(_PID.unpack(data[1:])[0], request, stdin, stdout, stderr, reply)
                if self.controller is None:
                    self._arrive(worker)
                else:
                    self._admit(worker, fds[5])
                continue
            for fd in fds:
                _close(fd)  # a worker we cannot use: its closed reply socket ends it
            if kind == b"W":
                self.pending = max(0, self.pending - 1)
            elif kind == b"E":
                count, _, why = data[1:].decode("utf-8", "replace").partition(":")
                self.pending = max(0, self.pending - int(count)) if count.isdigit() else 0
                self.fork_error = why or "the pool cannot fork a worker"
            elif not data:
                self.dead = True  # the server ended; the pool's task sees bubblewrap go
                self._wake()
                return
            self._wake()

    def _admit(self, worker: _Worker, pidfd: int) -> None:
        """Have the admitter put a new worker in a cgroup of its own; it is ready after."""
        assert self.controller is not None and self.admitter is not None

        def admitted(job: _cgroup.Admission) -> None:
            self.admitting -= 1
            if self.admitting == 0 and self.settled is not None:
                self.settled.set()
            worker.cgroup, worker.problem = job.cgroup, job.problem
            if job.cgroup is not None:
                if self.ended:  # came back after the pool's end (bounded wait passed)
                    worker.close()
                    if not job.cgroup.rmdir():
                        log.warning("a pool worker's memory cgroup %s is left behind", job.cgroup.path)
                    return
                self.cgroups.add(job.cgroup)
            self._arrive(worker)

        self.admitting += 1
        self.admitter.submit(_cgroup.Admission(self.controller, self.spec.memory_bytes, pidfd, admitted))

    def _arrive(self, worker: _Worker) -> None:
        self.pending = max(0, self.pending - 1)
        self.fork_error = None
        self._hand(worker)

    def _hand(self, worker: _Worker) -> None:
        """Give a ready worker to the longest waiting call, else keep it ready."""
        if self.dead:
            worker.close()
        elif self.waiters:
            waiter = self.waiters.popleft()
            waiter.worker = worker
            waiter.event.set()
        else:
            self.ready.append(worker)

    def _wake(self) -> None:
        """Wake every waiting call without a worker: the pool died or forks failed."""
        while self.waiters:
            self.waiters.popleft().event.set()

    def _top_up(self, target: int) -> None:
        """Ask the server for workers until `target` are ready or on their way."""
        need = target - len(self.ready) - self.pending
        if need <= 0 or self.dead or self.control is None:
            return
        try:
            self.control.send(b"F%d" % need)
        except OSError:
            return  # the server is gone (its end is seen by `_messages`)
        self.pending += need

    async def _refills(self) -> None:
        """What follows a call once it has returned (`call` unparks this task): ask for
        the workers calls took, and remove the cgroups of ended calls (empty: their
        status said every process of the call was dead). The server's wake-up and fork
        then neither delay the call's answer nor, on a busy core, preempt the engine
        before it is handed back; the removal (a cgroup's offlining in the kernel) is
        off the call's path too."""
        while True:
            await self.refill.park()
            self._top_up(self.backend.workers)
            while self.removals:
                cgroup = self.removals.pop()
                await _cgroup.remove(cgroup)
                self.cgroups.discard(cgroup)

    async def _take(self) -> _Worker:
        """A live ready worker, now the caller's. Raises SpawnError when none can come."""
        dead = 0
        while True:
            if self.admitter is not None:
                self.admitter.deliver()  # workers admitted since, ready now
            worker = self.ready.popleft() if self.ready and not self.waiters else await self._wait()
            if worker.cgroup is not None:
                self.cgroups.discard(worker.cgroup)
            if not worker.gone():
                # While a call is in flight, forks (which compete with it for the CPU)
                # are asked for only when few workers are left; the rest after it.
                self._top_up(_LOW)
                return worker
            # It died before its call (in set-up): another one.
            dead += 1
            why = worker.last_words()
            await self._let_go(worker)
            if dead >= _DEAD_WORKERS:
                raise SpawnError(f"no worker for the call: the pool's workers die before it ({why or 'no message'})")

    async def _wait(self) -> _Worker:
        """The next worker to arrive, in the order calls began to wait."""
        while True:
            if self.dead:
                raise SpawnError("no worker for the call: the pool sandbox ended")
            if self.fork_error is not None and self.pending == 0:
                why, self.fork_error = self.fork_error, None
                raise SpawnError(f"no worker for the call: {why}")
            waiter = _Waiter()
            self.waiters.append(waiter)
            try:
                self._top_up(len(self.waiters))
                if self.admitter is None:
                    await waiter.event.wait()
                else:
                    with self.admitter.wants():  # may hand this waiter a worker at once
                        await waiter.event.wait()
            except BaseException:
                if waiter.worker is not None:
                    self._hand(waiter.worker)  # handed over as we were cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        self.waiters.remove(waiter)
                raise
            if waiter.worker is not None:
                return waiter.worker

    async def _let_go(self, worker: _Worker) -> None:
        """Close a worker taken from the pool and remove its cgroup."""
        worker.close()
        if worker.cgroup is not None:
            await _cgroup.remove(worker.cgroup)

    async def call(self, spec: Spec, stdin_data: bytes, go: Go | None = None) -> Result:
        worker = await self._take()
        try:
            if go is not None:
                # The worker waits for its limits, which `_drive` writes after `go`.
                try:
                    await go()
                except BaseException:
                    await worker.kill_and_wait()
                    raise
            return await self._drive(spec, stdin_data, worker)
        finally:
            cgroup = worker.cgroup
            if cgroup is not None and worker.ended and not self.dead:
                # Empty now; removed right after the call has returned (`_refills`), or
                # with the pool's other cgroups when it ends.
                worker.close()
                self.cgroups.add(cgroup)
                self.removals.append(cgroup)
            else:
                await self._let_go(worker)
            self.refill.unpark_all()

    async def _drive(self, spec: Spec, stdin_data: bytes, worker: _Worker) -> Result:
        collected = Collected(started=trio.current_time())
        exchange = _Exchange(worker, collected, spec.max_output_bytes, spec.max_stderr_bytes)
        deadline = collected.started + spec.timeout_s
        try:
            exchange.start(stdin_data, _limits(spec))
            if exchange.quiet():
                quiet = _QUIET_S
                while True:
                    with trio.move_on_at(min(deadline, trio.current_time() + quiet)):
                        await exchange.wait_status()
                    if exchange.status is not None or exchange.take_outputs() or trio.current_time() >= deadline:
                        break  # answered, or writing (to be read as it writes), or out of time
                    quiet = min(quiet * 2, _QUIET_MAX_S)
            if exchange.status is None:
                with trio.move_on_at(deadline):
                    await exchange.pump(exchange.has_status)
            if exchange.status is None:
                collected.timed_out = True
                await exchange.kill_and_wait()
            collected.ended = trio.current_time()
            # Every process of the call is dead: its pipes are at EOF, or about to be
            # (mostly already seen with the status: then no second scope and wait).
            if not exchange.outputs_done():
                with trio.move_on_after(1.0):
                    await exchange.pump(exchange.outputs_done)
        except BaseException:
            if exchange.status is None:
                await exchange.kill_and_wait()
            raise
        finally:
            exchange.close()
        if not collected.ended:
            collected.ended = trio.current_time()
        notes = (f"no memory cgroup ({worker.problem})",) if worker.problem else ()
        # The status comes after the worker is reaped: the cgroup's counts are final.
        cgroup = worker.cgroup
        memory = (cgroup.oom_kills() > 0, cgroup.peak_bytes()) if cgroup else (False, 0)
        return self._result(spec, collected, exchange.status or {}, memory=memory, notes=notes)

    def _result(
        self, spec: Spec, collected: Collected, status: dict[str, Any], *,
        memory: tuple[bool, int] = (False, 0), notes: tuple[str, ...] = (),
    ) -> Result:  # fmt: skip
        raw = status.get("status")
        exit_code: int | None = None
        sig: int | None = None
        setup_error = None
        if isinstance(raw, int):
            if os.WIFEXITED(raw):
                exit_code = os.WEXITSTATUS(raw)
            elif os.WIFSIGNALED(raw):
                sig = os.WTERMSIG(raw)
        elif not collected.timed_out:
            setup_error = "the pool sandbox ended during the call"
        stderr = bytes(collected.stderr).decode("utf-8", "replace")
        if exit_code == _SETUP_FAILED and "sconnect-sandbox: setup failed" in stderr:
            setup_error = stderr.strip().splitlines()[-1]
        return build_result(
            spec,
            backend=self.backend.name,
            collected=collected,
            exit_code=exit_code,
            signal=sig,
            cpu_time_s=float(status.get("cpu_time_s", 0.0)),
            peak_memory_bytes=max(int(status.get("peak_memory_bytes", 0)), memory[1]),
            setup_error=setup_error,
            notes=notes,
            memory_killed=memory[0],
        )


def _decode(data: bytes) -> dict[str, Any]:
    """One of bubblewrap's JSON status lines."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@attrs.define(eq=False)
class PoolSet:
    """The warm sandboxes of one service, keyed by profile. Build with `open_pools()`."""

    nursery: trio.Nursery
    max_pools: int = 16  # beyond it the least recently used idle pool is closed
    pools: dict[Spec, _Pool] = attrs.Factory(dict)
    starting: dict[Spec, trio.Lock] = attrs.Factory(dict)
    admitter: _cgroup.Admitter | None = None  # where a memory cgroup is in force
    live: int = 0  # pool tasks running (the admitter outlives them: they wait for it as they end)
    closing: bool = False  # `open_pools` is ending: the admitter stops once no pool task is left

    async def pool(self, spec: Spec, backend: PoolBackend) -> _Pool:
        """The live pool for `spec`'s profile, started (or restarted) when needed."""
        key = profile(spec)
        pool = self.pools.get(key)
        if pool is not None and not pool.dead:
            if next(reversed(self.pools)) is not key:
                self.pools[key] = self.pools.pop(key)  # most recently used last
            return pool
        lock = self.starting.setdefault(key, trio.Lock())
        async with lock:
            pool = self.pools.get(key)
            if pool is not None and not pool.dead:
                self.pools[key] = self.pools.pop(key)  # most recently used last
                return pool
            self.pools.pop(key, None)
            self._evict()
            pool = _Pool(spec=key, backend=backend, admitter=self.admitter)
            await self.nursery.start(self._serve, pool)
            self.pools[key] = pool
            return pool

    async def _serve(self, pool: _Pool, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.live += 1
        try:
            await pool.serve(task_status=task_status)
        finally:
            self.live -= 1
            self.stop_admitter_when_idle()

    def stop_admitter_when_idle(self) -> None:
        """Stop the admitter once the set is closing and every pool task has ended."""
        if self.closing and self.live == 0 and self.admitter is not None:
            self.admitter.stop()

    def _evict(self) -> None:
        for key, pool in list(self.pools.items()):
            if len(self.pools) < self.max_pools:
                return
            if pool.active == 0:
                pool.scope.cancel()
                del self.pools[key]

    async def run(self, spec: Spec, stdin_data: bytes, backend: PoolBackend, go: Go | None = None) -> Result:
        pool = await self.pool(spec, backend)
        pool.active += 1
        try:
            return await pool.call(spec, stdin_data, go)
        finally:
            pool.active -= 1


@contextlib.asynccontextmanager
async def open_pools(*, max_pools: int = 16) -> AsyncIterator[PoolSet]:
    """A PoolSet for the body; every pool sandbox is shut down and reaped on exit.

    Calls of ``isolation: pool`` tools made by tasks started inside the body use it.
    """
    admitter = _cgroup.Admitter() if _cgroup.probe().controller is not None else None
    async with trio.open_nursery() as nursery:
        pools = PoolSet(nursery=nursery, max_pools=max_pools, admitter=admitter)
        if admitter is not None:
            await nursery.start(admitter.run)
        token = _current.set(pools)
        try:
            yield pools
        finally:
            _current.reset(token)
            nursery.cancel_scope.cancel()
            pools.closing = True
            pools.stop_admitter_when_idle()


@attrs.frozen
class PoolBackend:
    """Warm sandboxes with pre-forked workers. Build with `backend_for()`."""

    bwrap: str
    setpriv: str | None
    python: str = "/usr/bin/python3"
    name: str = "pool"
    disable_userns: bool = True
    workers: int = 4  # K: workers kept forked ahead of time per pool

    async def run(self, spec: Spec, arguments: Any, *, go: Go | None = None) -> Result:
        """Run one call; see `sandbox.run` for the contract (kill on cancel, no leftovers).

        `go` is awaited once a ready worker (in its cgroup) is the call's, before its
        arguments and limits are written: the worker runs nothing of the tool until then.
        If `go` raises, the worker is killed and reaped first.
        """
        stdin_data = encode_arguments(arguments)
        work_root = prepare_work_root(spec.work_root or default_work_root())
        check_paths(spec, work_root)
        # Its packages are made reachable for the sandbox user when its pool starts (the
        # fork server imports the tool then, once), not on every call.
        pools = _current.get()
        if pools is not None:
            return await pools.run(spec, stdin_data, self, go)
        try:
            async with open_pools(max_pools=1) as temporary:
                return await temporary.run(spec, stdin_data, self, go)
        except BaseExceptionGroup as group:
            # The temporary set's nursery groups what the call raised: give it back alone.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
