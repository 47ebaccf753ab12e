"""`PoolBackend` (``isolation: pool``): warm bubblewrap sandboxes with pre-forked workers.

One long-lived bubblewrap sandbox per isolation profile — the same flags as the
namespaces backend (`_bwrap.options`, `--seccomp`, `--disable-userns`, started as
`SANDBOX_UID` through setpriv when root, empty environment, options from a memfd) —
runs the fork server (`_forkserver`) under ``python3 -S -I``. A profile is everything
of a Spec that shapes the sandbox (program, packages, paths, env, network, cwd, memory
for the tmpfs sizes, work root); the per-call limits (time, CPU, memory, file size,
files, processes, output) travel with each call. A workspace is one of the paths, so
each subject's calls get their own pool sandbox.

A call: the engine makes a socket pair, sends its rlimits with one end (SCM_RIGHTS)
over the pool's control socket, receives the ready worker's stdin/stdout/stderr, writes
the arguments, reads stdout (capped) and stderr (tail) itself, and waits for the status
packet the server sends after killing the worker's group and reaping it. The pool
refills behind the call; every call runs in a fresh worker process that is gone after it.

Memory cgroup: where one is in force (`_cgroup.probe()`), each call gets its own, made
before the request. The server then hands over the worker's request pipe instead of
writing the limits into it; the engine finds the worker's host pid (the hand-out names
its sandbox pid: `_host_pid` matches NSpid among the fork server's children), writes it
into the cgroup, and only then writes the limits, the go-ahead the worker blocks on
before it runs anything of the tool. The cgroup's OOM kills and peak are read after the
status packet (the worker is reaped by then) and it is removed on every way out.

Ownership: pools live in a `PoolSet` opened with `open_pools()` (an async context
manager holding a nursery; the server opens it around its hub). Each pool's task owns
its bubblewrap process: it drains its output, notices its death (the next call starts a
fresh one), and on close shuts the control socket (the server ends), then SIGKILLs the
sandbox's pid 1 if needed and reaps bubblewrap, and removes the pool's directory. A call
made outside any `open_pools()` opens a temporary set for itself (correct, not fast).

Timeout and cancellation: a packet on the call's reply socket makes the server SIGKILL
the worker's process group (no member can leave it: setsid/setpgid are denied); the call
then waits (shielded, bounded) for the status packet, so the tool is dead and reaped
before `run` returns or re-raises `trio.Cancelled`.
"""

from __future__ import annotations

import array
import contextlib
import contextvars
import functools
import json
import marshal
import os
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from . import _bwrap, _cgroup, _seccomp
from ._call import build_result, encode_arguments, memfd, reachable_spec
from ._errors import SpawnError, SpecError
from ._limits import rlimits
from ._pool_seccomp import worker_filter
from ._process import Child, Collected, _read_capped, _write_all, spawn, wait_or_kill
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

_ARGS_FD = 3
_STATUS_FD = 4
_CONTROL_FD = 5
_SECCOMP_FD = 6
_CONFIG_FD = 7
_POOL_FILES = ("_forkserver.py", "_runner.py", "_landlock.py")
_SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc")
_SETUP_FAILED = 125
_START_TIMEOUT_S = 20.0
_KILL_WAIT_S = 10.0

# the pool set of the running service (set by `open_pools`)
_current: contextvars.ContextVar[PoolSet | None] = contextvars.ContextVar("sandbox_pools", default=None)

# per-call fields: everything else of a Spec is the pool's profile
_PER_CALL = ("timeout_s", "cpu_time_s", "max_output_bytes", "max_stderr_bytes", "max_open_files",
             "max_processes", "max_file_bytes")  # fmt: skip


def profile(spec: Spec) -> Spec:
    """The Spec with its per-call fields at their defaults: one pool per distinct value."""
    defaults = Spec(argv=("x",))
    return attrs.evolve(spec, **{name: getattr(defaults, name) for name in _PER_CALL})


@functools.cache
def _pool_runner_dir(work_root: str) -> str:
    """Copies of the fork server and its two siblings, readable by the sandbox user."""
    return staged_copy(work_root, _POOL_FILES, ".pool")


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


def _decode(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@attrs.define(eq=False)
class _Pool:
    """One warm sandbox. Mutable runtime state, owned by its task in a PoolSet."""

    spec: Spec  # the profile, packages already made reachable
    backend: PoolBackend
    control: Any = None  # trio socket, engine end
    child: Child | None = None
    pid1: int | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    dead: bool = False
    active: int = 0
    send_lock: trio.Lock = attrs.Factory(trio.Lock)
    stderr: bytearray = attrs.Factory(bytearray)
    pid1_fd: int = -1  # pidfd of the sandbox's pid 1, once it is known alive

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the sandbox, report ready, own it until cancelled or dead.

        Raises SpawnError (before `started`) when it cannot start.
        """
        spec = self.spec
        work_root = prepare_work_root(spec.work_root or default_work_root())
        pool_dir = make_call_dir(work_root)
        try:
            with self.scope:
                await self._run(spec, work_root, pool_dir, task_status)
        finally:
            self.dead = True
            with trio.CancelScope(shield=True):
                await self._stop()
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
        }
        launcher = [
            backend.bwrap, "--args", str(_ARGS_FD), "--json-status-fd", str(_STATUS_FD),
            backend.python, "-S", "-I", f"{_bwrap.RUNNER_MOUNT}/_forkserver.py",
            str(_CONFIG_FD), str(_CONTROL_FD),
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
        self.control = trio.socket.from_stdlib_socket(ours)
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
                ready = await self.control.recv(4096)
            if _decode(ready).get("ready"):
                started = True
                # The sandbox's pid 1 is alive now (its child, the server, just spoke): a
                # pidfd on it lets the stop wait for the whole namespace to be gone.
                pid1 = self._sandbox_init(child)
                if pid1 is not None:
                    with contextlib.suppress(OSError):
                        self.pid1_fd = os.pidfd_open(pid1)
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

    async def call(self, spec: Spec, stdin_data: bytes) -> Result:
        async with _cgroup.for_call(spec.memory_bytes) as cgroup:
            return await self._call(spec, stdin_data, cgroup)

    async def _call(self, spec: Spec, stdin_data: bytes, cgroup: _cgroup.CallCgroup | None) -> Result:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            request = json.dumps({"limits": rlimits(spec), "gate": cgroup is not None}).encode()
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))]
            async with self.send_lock:
                try:
                    await self.control.sendmsg([request], rights)
                except OSError as exc:
                    raise SpawnError(exc.errno, f"the pool sandbox is gone: {exc.strerror}") from None
        finally:
            theirs.close()
        with trio.socket.from_stdlib_socket(ours) as reply:
            return await self._drive(spec, stdin_data, reply, cgroup)

    async def _release(self, cgroup: _cgroup.CallCgroup, inner_pid: int, gate: int, limits: bytes) -> str | None:
        """Move the worker into the call's cgroup, then give it its limits (the go-ahead
        it waits for before it runs anything of the tool). Returns the problem, if any:
        the call then runs on RLIMIT_AS and the sized tmpfs alone, and says so."""
        problem = None
        host = _host_pid(self._sandbox_init(self.child) if self.child else None, inner_pid)
        if host is None:
            problem = f"cannot find the worker's host pid (sandbox pid {inner_pid})"
        else:
            try:
                # A thread: the kernel's cgroup migration may wait for an RCU grace
                # period (measured up to ~17 ms here), which must not stall the loop.
                await trio.to_thread.run_sync(cgroup.add, host)
            except OSError as exc:
                problem = f"cannot move the worker into {cgroup.path}: {exc.strerror}"
        try:
            _write_all_blocking(gate, limits)
        except OSError:
            pass  # the worker died in set-up; its status tells
        return problem

    async def _drive(
        self, spec: Spec, stdin_data: bytes, reply: Any, cgroup: _cgroup.CallCgroup | None
    ) -> Result:
        fds = array.array("i")
        wanted = 3 if cgroup is None else 4
        data, ancdata, _flags, _addr = await reply.recvmsg(
            4096, socket.CMSG_SPACE(4 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        message = _decode(data)
        if not isinstance(message.get("pid"), int) or len(fds) != wanted:
            for fd in fds:
                os.close(fd)
            why = message.get("error") or "the pool sandbox ended"
            raise SpawnError(f"no worker for the call: {why}")
        stdin_w, stdout_r, stderr_r = fds[:3]
        notes: tuple[str, ...] = ()
        collected = Collected(started=trio.current_time())
        status: dict[str, Any] = {}
        streams_done = trio.Event()

        async def outputs() -> None:
            async def out() -> None:
                collected.truncated = await _read_capped(
                    stdout_r, collected.stdout, spec.max_output_bytes, tail=False
                )

            async def err() -> None:
                await _read_capped(stderr_r, collected.stderr, spec.max_stderr_bytes, tail=True)

            async with trio.open_nursery() as inner:
                inner.start_soon(out)
                inner.start_soon(err)
            streams_done.set()

        async def wait_status() -> None:
            try:
                data = await reply.recv(4096)
            except OSError:  # the server (and with it the sandbox) is gone
                data = b""
            status.update(_decode(data) or {"gone": True})

        async def kill_and_wait() -> None:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(OSError):
                    await reply.send(b"k")
                with trio.move_on_after(_KILL_WAIT_S):
                    await wait_status()

        owned = list(fds)  # the worker's request pipe last, when it was handed over
        try:
            if cgroup is not None:
                gate = owned.pop()
                try:
                    limits = json.dumps(rlimits(spec)).encode()
                    problem = await self._release(cgroup, message["pid"], gate, limits)
                finally:
                    os.close(gate)  # unreleased (cancelled), the worker reads EOF and exits
                notes = (f"no memory cgroup ({problem})",) if problem else ()
            async with trio.open_nursery() as nursery:
                owned.clear()  # the streams own the descriptors from here
                nursery.start_soon(_write_all, stdin_w, stdin_data)
                nursery.start_soon(outputs)
                with trio.move_on_after(spec.timeout_s):
                    await wait_status()
                if not status:
                    collected.timed_out = True
                    await kill_and_wait()
                collected.ended = trio.current_time()
                with trio.move_on_after(1.0):
                    await streams_done.wait()
                nursery.cancel_scope.cancel()
        except BaseException:
            if not status:
                await kill_and_wait()
            raise
        finally:
            for fd in owned:
                os.close(fd)
        # The status comes after the worker is reaped: the cgroup's counts are final.
        memory = (cgroup.oom_kills() > 0, cgroup.peak_bytes()) if cgroup else (False, 0)
        return self._result(spec, collected, status, memory=memory, notes=notes)

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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _inner_pid(host: int) -> int | None:
    """`host`'s pid in its innermost pid namespace (the last field of NSpid)."""
    try:
        with open(f"/proc/{host}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def _host_pid(pid1: int | None, inner: int) -> int | None:
    """The host pid of the worker known inside the sandbox as `inner`.

    The hand-out names the worker by its sandbox pid; the kernel shows each process's
    pids in every namespace as NSpid. Workers are children of the fork server, the child
    of the sandbox's pid 1. A ready worker is the server's unreaped child, so its pid is
    not reused before the call ends.
    """
    if pid1 is None:
        return None
    for server in _children(pid1):
        for worker in _children(server):
            if _inner_pid(worker) == inner:
                return worker
    return None


def _write_all_blocking(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@attrs.define(eq=False)
class PoolSet:
    """The warm sandboxes of one service, keyed by profile. Build with `open_pools()`."""

    nursery: trio.Nursery
    max_pools: int = 16  # beyond it the least recently used idle pool is closed
    pools: dict[Spec, _Pool] = attrs.Factory(dict)
    starting: dict[Spec, trio.Lock] = attrs.Factory(dict)

    async def pool(self, spec: Spec, backend: PoolBackend) -> _Pool:
        """The live pool for `spec`'s profile, started (or restarted) when needed."""
        key = profile(spec)
        lock = self.starting.setdefault(key, trio.Lock())
        async with lock:
            pool = self.pools.get(key)
            if pool is not None and not pool.dead:
                self.pools[key] = self.pools.pop(key)  # most recently used last
                return pool
            self.pools.pop(key, None)
            self._evict()
            pool = _Pool(spec=key, backend=backend)
            await self.nursery.start(pool.serve)
            self.pools[key] = pool
            return pool

    def _evict(self) -> None:
        for key, pool in list(self.pools.items()):
            if len(self.pools) < self.max_pools:
                return
            if pool.active == 0:
                pool.scope.cancel()
                del self.pools[key]

    async def run(self, spec: Spec, stdin_data: bytes, backend: PoolBackend) -> Result:
        pool = await self.pool(spec, backend)
        pool.active += 1
        try:
            return await pool.call(spec, stdin_data)
        finally:
            pool.active -= 1


@contextlib.asynccontextmanager
async def open_pools(*, max_pools: int = 16) -> AsyncIterator[PoolSet]:
    """A PoolSet for the body; every pool sandbox is shut down and reaped on exit.

    Calls of ``isolation: pool`` tools made by tasks started inside the body use it.
    """
    async with trio.open_nursery() as nursery:
        pools = PoolSet(nursery=nursery, max_pools=max_pools)
        token = _current.set(pools)
        try:
            yield pools
        finally:
            _current.reset(token)
            nursery.cancel_scope.cancel()


@attrs.frozen
class PoolBackend:
    """Warm sandboxes with pre-forked workers. Build with `backend_for()`."""

    bwrap: str
    setpriv: str | None
    python: str = "/usr/bin/python3"
    name: str = "pool"
    disable_userns: bool = True
    workers: int = 4  # K: workers kept forked ahead of time per pool

    async def run(self, spec: Spec, arguments: Any) -> Result:
        """Run one call; see `sandbox.run` for the contract (kill on cancel, no leftovers)."""
        stdin_data = encode_arguments(arguments)
        work_root = prepare_work_root(spec.work_root or default_work_root())
        check_paths(spec, work_root)
        spec = reachable_spec(spec, work_root)
        pools = _current.get()
        if pools is not None:
            return await pools.run(spec, stdin_data, self)
        try:
            async with open_pools(max_pools=1) as temporary:
                return await temporary.run(spec, stdin_data, self)
        except BaseExceptionGroup as group:
            # The temporary set's nursery groups what the call raised: give it back alone.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
