"""A memory cgroup per call, where the host lets us make one.

RLIMIT_AS bounds one process's address space, and the sized tmpfs mounts bound the
scratch space; neither bounds a call as a whole (several processes each under
RLIMIT_AS, page cache, kernel memory). A memory cgroup does: every page the call's
processes touch, tmpfs pages included, is charged to it, and the kernel OOM-kills inside
it when the call goes past its budget.

Which one is in force is probed once (`probe()`), in this order:

- cgroup v2 with the memory controller delegated to our own cgroup: per-call children
  get ``memory.max`` = the budget and ``memory.swap.max`` = 0. v2 forbids processes in a
  cgroup whose children have controllers, so when our cgroup holds only this process it
  moves itself into a leaf ``sconnect-engine`` first and enables ``+memory`` for its
  children (what systemd's ``Delegate=yes`` expects a service to do).
- cgroup v1 with a writable memory hierarchy, as root: children of our own memory
  cgroup get ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (when swap is
  accounted) = the budget.
- otherwise none: RLIMIT_AS and the sized tmpfs mounts only. Never an error.

Per call (`for_call`, or `make` and `remove`): a child ``sconnect-<engine pid>-<n>`` is
made before the launch; the backend puts the sandbox's first process in it before that
process runs the tool (see the backends: bubblewrap waits on ``--block-fd``; the process
backend's supervisor moves itself before it forks the tool; the pool's `Admitter` moves
each worker, by its host pid, into a cgroup of its own as the worker arrives, before the
worker is ready, and the worker runs nothing of a call before the engine writes its
limits), so everything the tool starts is in it. After the launcher is reaped the
OOM-kill count and the peak are read, and the cgroup is removed: on success, error,
timeout and cancellation alike (shielded, bounded; a process still in it is SIGKILLed
first, it can only be the call's own). Cgroups are made, opened and removed relative
to a descriptor of their parent.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import itertools
import logging
import os
import queue
import signal
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import trio

log = logging.getLogger("sandbox.cgroup")

_PREFIX = "sconnect-"
_ENGINE_LEAF = "sconnect-engine"
_names = itertools.count(1)


@attrs.frozen
class Controller:
    """Where per-call memory cgroups are made, and of which version."""

    version: int  # 1 or 2
    parent: str  # the directory that holds the per-call cgroups

    def describe(self) -> str:
        where = f"one per call of the namespaces, process and pool backends, under {self.parent}"
        if self.version == 2:
            return f"memory: cgroup v2 ({where})"
        return f"memory: cgroup v1 (memory controller; {where})"


@attrs.frozen
class Probe:
    """The outcome of `probe()`: a controller, or why there is none."""

    controller: Controller | None
    why_not: str = ""

    def describe(self) -> str:
        """One line for `sconnect check` and the start-up summary."""
        if self.controller is not None:
            return self.controller.describe()
        return f"memory: rlimit + sized tmpfs only (no delegated cgroup: {self.why_not})"


# cgroupfs and procfs files: in-kernel, never blocking on disk; os-level calls because
# a per-call cgroup is on every call's path (Python's io layers cost more than the read).
def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _pread(fd)
    finally:
        os.close(fd)


def _pread(fd: int) -> str:
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    return data.decode()


def _pread_counter(fd: int) -> str:
    """A counter file of a few lines: its one generated record comes whole from one read."""
    data = os.pread(fd, 4096, 0)
    return data.decode() if len(data) < 4096 else _pread(fd)


def _write(path: str, text: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=64)
def _has(parent: str, name: str) -> bool:
    """Whether cgroups under `parent` have the file `name` (the same for every child)."""
    return os.path.exists(os.path.join(parent, name))


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root within the hierarchy, mount point, fs type, super options) of cgroup mounts."""
    found = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        fstype = fields[dash + 1]
        if fstype in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4], fstype, fields[dash + 3]))
    return found


def _own_dir(mount_root: str, mount_point: str, own: str) -> str | None:
    """Our cgroup's directory under `mount_point`, or None when it is not visible there."""
    relative = os.path.relpath(own, mount_root) if own.startswith(mount_root) else None
    if relative is None or relative.startswith(".."):
        return None
    path = os.path.normpath(os.path.join(mount_point, relative))
    return path if os.path.isdir(path) else None


def _try_child(parent: str, version: int) -> str | None:
    """Make, limit and remove one cgroup under `parent`: None when that works, else why."""
    path = os.path.join(parent, f"{_PREFIX}{os.getpid()}-probe")
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create a cgroup under {parent}: {exc.strerror}"
    try:
        _limit(parent, os.path.basename(path), version, 64 * 2**20)
    except OSError as exc:
        return f"cannot set a memory limit under {parent}: {exc.strerror}"
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)
    return None


def _v2(mount_root: str, mount_point: str, own: str) -> Probe:
    path = _own_dir(mount_root, mount_point, own)
    if path is None:
        return Probe(None, f"our cgroup {own} is not visible under {mount_point}")
    if "memory" not in _read(os.path.join(path, "cgroup.controllers")).split():
        return Probe(None, f"cgroup v2 at {path} has no memory controller delegated")
    if not os.access(path, os.W_OK):
        return Probe(None, f"cgroup v2 at {path} is not writable by us")
    if os.path.basename(path) == _ENGINE_LEAF:
        path = os.path.dirname(path)  # moved there by an earlier probe of this process
    subtree = os.path.join(path, "cgroup.subtree_control")
    if "memory" not in _read(subtree).split():
        try:
            _write(subtree, "+memory")
        except OSError:
            # "No internal processes": our cgroup holds processes, so its children may
            # not have controllers. Move ourselves into a leaf if we are alone in it.
            procs = [int(pid) for pid in _read(os.path.join(path, "cgroup.procs")).split()]
            if procs != [os.getpid()]:
                return Probe(None, f"cgroup v2 at {path} holds other processes than ours")
            leaf = os.path.join(path, _ENGINE_LEAF)
            try:
                os.makedirs(leaf, exist_ok=True)
                _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
                _write(subtree, "+memory")
            except OSError as exc:
                return Probe(None, f"cannot enable the memory controller at {path}: {exc.strerror}")
    why = _try_child(path, 2)
    return Probe(None, why) if why else Probe(Controller(2, path))


def _v1(mount_root: str, mount_point: str, own: str) -> Probe:
    if os.geteuid() != 0:
        return Probe(None, "cgroup v1 memory controller, and the engine is not root")
    path = _own_dir(mount_root, mount_point, own)
    if path is None:
        return Probe(None, f"our memory cgroup {own} is not visible under {mount_point}")
    why = _try_child(path, 1)
    return Probe(None, why) if why else Probe(Controller(1, path))


@functools.cache
def probe() -> Probe:
    """Which memory cgroup this host gives us (probed once, cached; never raises)."""
    try:
        lines = _read("/proc/self/cgroup").splitlines()
        mounts = _mounts()
    except OSError as exc:
        return Probe(None, f"cannot read our cgroups: {exc.strerror}")
    own_v1 = next((line.split(":", 2)[2] for line in lines if line.split(":")[1:2] == ["memory"]), None)
    own_v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
    try:
        found = _find(own_v1, own_v2, mounts)
    except OSError as exc:
        return Probe(None, f"{exc.filename or 'cgroupfs'}: {exc.strerror}")
    if found.controller is not None:
        remove_stale(found.controller.parent)
    return found


def _find(own_v1: str | None, own_v2: str | None, mounts: list[tuple[str, str, str, str]]) -> Probe:
    if own_v1 is not None:
        for root, point, fstype, options in mounts:
            if fstype == "cgroup" and "memory" in options.split(","):
                return _v1(root, point, own_v1)
        return Probe(None, "the cgroup v1 memory controller is not mounted")
    if own_v2 is not None:
        for root, point, fstype, _ in mounts:
            if fstype == "cgroup2":
                return _v2(root, point, own_v2)
    return Probe(None, "no cgroup hierarchy with a memory controller")


def remove_stale(parent: str) -> list[str]:
    """Remove the empty per-call cgroups under `parent` of engines that are gone (one
    SIGKILLed while its pools' ready workers sat in their cgroups leaves them behind,
    empty once the sandboxes died); returns their names. Never raises."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        owner = name[len(_PREFIX) :].split("-", 1)[0] if name.startswith(_PREFIX) else ""
        if not owner.isdigit() or _alive(int(owner)):
            continue
        if _remove(os.path.join(parent, name)):  # refused while it holds a process
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


_dir_fds: dict[str, int] = {}


def _dir_fd(parent: str) -> int:
    """A descriptor of `parent`, opened once: per-call cgroups are made, opened and
    removed relative to it (a path walk from / through cgroupfs for every file of every
    call costs more than the rest of the open)."""
    fd = _dir_fds.get(parent)
    if fd is None:
        fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        kept = _dir_fds.setdefault(parent, fd)  # another thread may have won: keep one
        if kept != fd:
            os.close(fd)
        fd = kept
    return fd


def _limit(parent: str, name: str, version: int, memory_bytes: int, dir_fd: int | None = None) -> None:
    """Limit the cgroup `name` under `parent` (with `dir_fd`, `parent`'s descriptor: its
    files are opened relative to it)."""
    where = name if dir_fd is not None else os.path.join(parent, name)
    if version == 2:
        _write(f"{where}/memory.max", str(memory_bytes), dir_fd)
        if _has(parent, "memory.swap.max"):
            _write(f"{where}/memory.swap.max", "0", dir_fd)
        return
    _write(f"{where}/memory.limit_in_bytes", str(memory_bytes), dir_fd)
    # only when swap is accounted; must come after the limit
    if _has(parent, "memory.memsw.limit_in_bytes"):
        _write(f"{where}/memory.memsw.limit_in_bytes", str(memory_bytes), dir_fd)


@attrs.define(eq=False)
class CallCgroup:
    """One call's cgroup. Mutable runtime object owned by `for_call` (or a pool)."""

    path: str
    version: int
    memory_bytes: int
    # the OOM-kill and peak files, opened ahead (`open_counters`): read at 0 when needed
    counters: dict[str, int] = attrs.Factory(dict)
    # the parent's descriptor (`_dir_fd`): the cgroup's files are opened relative to it
    parent_fd: int | None = None
    name: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.name = os.path.basename(self.path)

    def _file(self, name: str) -> tuple[str, int | None]:
        """How to open one of its files: (path, dir_fd) for os.open."""
        if self.parent_fd is None:
            return os.path.join(self.path, name), None
        return f"{self.name}/{name}", self.parent_fd

    def open_counters(self) -> None:
        """Open the files `oom_kills` and `peak_bytes` read, ahead of the call (a fresh
        cgroup's first open of a file costs more than reading it)."""
        for name in self._counter_files():
            path, dir_fd = self._file(name)
            with contextlib.suppress(OSError):
                self.counters[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)

    def close_counters(self) -> None:
        for fd in self.counters.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.counters.clear()

    def _counter_files(self) -> tuple[str, str]:
        if self.version == 2:
            return ("memory.events", "memory.peak")
        return ("memory.oom_control", "memory.max_usage_in_bytes")

    def _read_counter(self, name: str) -> str:
        fd = self.counters.get(name)
        return _read(os.path.join(self.path, name)) if fd is None else _pread_counter(fd)

    @property
    def procs_file(self) -> str:
        """Write a pid here to move that process (v1: one process; v2: its threads too)."""
        return os.path.join(self.path, "cgroup.procs")

    def add(self, pid: int) -> None:
        """Move `pid` into this cgroup. Raises OSError when the kernel refuses."""
        path, dir_fd = self._file("cgroup.procs")
        _write(path, str(pid), dir_fd)

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in _read(self.procs_file).split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed here (0 when it cannot be read)."""
        try:
            text = self._read_counter(self._counter_files()[0])
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int:
        """The highest charge seen (processes, tmpfs and page cache); 0 when unknown."""
        try:
            return int(self._read_counter(self._counter_files()[1]).strip())
        except (OSError, ValueError):
            return 0

    def rmdir(self) -> bool:
        """Remove it: True when it is gone, False while it holds a process."""
        if self.parent_fd is None:
            return _remove(self.path)
        return _remove(self.name, self.parent_fd)


def _remove(path: str, dir_fd: int | None = None) -> bool:
    try:
        os.rmdir(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


async def _remove_when_empty(cgroup: CallCgroup) -> None:
    """Remove the cgroup; SIGKILL what is still in it (only the call's processes can be)."""
    for attempt in range(200):
        if cgroup.rmdir():
            return
        for pid in cgroup.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        # The kernel reaps killed processes asynchronously; rmdir succeeds once it has.
        await trio.sleep(0.005 if attempt < 20 else 0.05)
    log.warning("cannot remove the call's memory cgroup %s: processes remain", cgroup.path)


def make(controller: Controller, memory_bytes: int) -> CallCgroup:
    """A fresh cgroup under `controller` limited to `memory_bytes`. Raises OSError (and
    leaves nothing) when it cannot be made."""
    parent = controller.parent
    dir_fd = _dir_fd(parent)
    name = f"{_PREFIX}{os.getpid()}-{next(_names)}"
    try:
        os.mkdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        # The parent was removed (and perhaps made again) since we opened it: open it
        # anew (the old descriptor stays open: cgroups made under it still use it).
        if _dir_fds.get(parent) == dir_fd:
            del _dir_fds[parent]
        dir_fd = _dir_fd(parent)
        os.mkdir(name, dir_fd=dir_fd)
    try:
        _limit(parent, name, controller.version, memory_bytes, dir_fd)
    except OSError:
        _remove(name, dir_fd)
        raise
    return CallCgroup(os.path.join(parent, name), controller.version, memory_bytes, parent_fd=dir_fd)


async def remove(cgroup: CallCgroup) -> None:
    """Remove a call's cgroup, SIGKILLing what is still in it (shielded, bounded)."""
    cgroup.close_counters()
    if cgroup.rmdir():
        return  # the common case: its processes are gone
    with trio.move_on_after(15, shield=True):
        await _remove_when_empty(cgroup)


@contextlib.asynccontextmanager
async def for_call(memory_bytes: int) -> AsyncIterator[CallCgroup | None]:
    """A fresh memory cgroup limited to `memory_bytes`, or None where none is in force
    (or it cannot be made now: then the call runs on rlimits alone, and says so in the
    log). Removed on the way out, cancellation included (shielded, bounded)."""
    found = probe().controller
    if found is None:
        yield None
        return
    try:
        cgroup = make(found, memory_bytes)
    except OSError as exc:
        log.warning("no memory cgroup for this call (%s: %s)", exc.filename or found.parent, exc.strerror)
        yield None
        return
    try:
        yield cgroup
    finally:
        await remove(cgroup)


# -- moving a process that is not our child in, by its pidfd (the warm pool's workers) --

# ioctl(PIDFD_GET_INFO) (Linux 6.13): _IOWR(0xFF, 11, struct pidfd_info), 64 bytes in
# its first version; `pid` (in the caller's pid namespace) at offset 16, after `mask`
# and `cgroupid`. PIDFD_INFO_PID (bit 0) asks for it.
_PIDFD_GET_INFO = 0xC040FF0B
_PIDFD_INFO = struct.Struct("=QQI")
_pidfd_info = True  # cleared when the kernel does not know the ioctl: fdinfo then


def pidfd_pid(pidfd: int) -> int | None:
    """The pid, as the engine sees it, of the process a pidfd refers to (None once it
    has been reaped). The kernel tells it through PIDFD_GET_INFO where it has it (one
    ioctl), else in the pidfd's fdinfo (an open, read and close of a procfs file)."""
    global _pidfd_info
    if _pidfd_info:
        info = bytearray(64)
        _PIDFD_INFO.pack_into(info, 0, 1, 0, 0)
        try:
            fcntl.ioctl(pidfd, _PIDFD_GET_INFO, info, True)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL):
                return None  # ESRCH: reaped
            _pidfd_info = False
        else:
            pid = _PIDFD_INFO.unpack_from(info)[2]
            return pid if pid > 0 else None
    try:
        fd = os.open(f"/proc/self/fdinfo/{pidfd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 4096)
        finally:
            os.close(fd)
        start = text.index(b"\nPid:") + 5
        pid = int(text[start : text.index(b"\n", start)])
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def admit(controller: Controller, memory_bytes: int, pidfd: int) -> tuple[CallCgroup | None, str | None]:
    """Make a cgroup and move the process of `pidfd` in (blocking: the kernel's cgroup
    migration may wait for an RCU grace period; run it in a thread).

    Returns the cgroup (None when none could be made: logged, as for the other
    backends) and the problem that kept the process out of it, if any. The caller
    keeps the process from being reaped meanwhile (the pool's worker is the fork
    server's child, which reaps it only once it has ended), so its pid is not reused.
    """
    try:
        cgroup = make(controller, memory_bytes)
    except OSError as exc:
        log.warning("no memory cgroup for a pool worker (%s: %s)", exc.filename or controller.parent, exc.strerror)
        return None, None
    host = pidfd_pid(pidfd)
    if host is None:
        return cgroup, "cannot find the worker's host pid"
    try:
        cgroup.add(host)
    except OSError as exc:
        return cgroup, f"cannot move the worker into {cgroup.path}: {exc.strerror}"
    cgroup.open_counters()
    return cgroup, None


@attrs.define(eq=False)
class Admission:
    """One process to put in a cgroup of its own (`Admitter.submit`), and the outcome."""

    controller: Controller
    memory_bytes: int
    pidfd: int  # the admitter closes it once done
    deliver: Callable[[Admission], None]  # called on the event loop with the outcome; must not raise
    cgroup: CallCgroup | None = None
    problem: str | None = None


_STOP = object()


@contextlib.contextmanager
def _no_wakeup_preemption() -> Iterator[None]:
    """Run this thread as SCHED_BATCH for the block (then back to SCHED_OTHER: trio
    reuses its threads). Woken by the event loop's submit, the admitter then waits for
    a free core rather than preempting the loop, which would only have to wait for it
    to let go of the interpreter lock before it could go on. Unprivileged; where the
    policy cannot be set, nothing changes. (The audit writer's thread does the same.)"""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@attrs.define(eq=False)
class Admitter:
    """Admits processes (`admit`) in one worker thread: a single ``trio.to_thread`` call
    that loops, for the life of `run`.

    A thread hop per admission costs the event loop more than the admission itself
    (~0.1 ms of CPU: the thread's wake-up, the interpreter lock and the loop's own
    wake-up for the answer). Here the loop only queues the job; the thread takes every
    job queued (one wake-up for many: moves made one right after another also share the
    kernel's RCU grace period) and leaves the outcomes for the loop to `deliver` when it
    next needs them. It wakes the loop (once per batch) only while someone `wants()`
    them: a call waiting for a worker, a pool waiting for its workers back as it ends.
    Every job submitted before `stop` is done and delivered before `run` returns.
    """

    _jobs: queue.SimpleQueue[Any] = attrs.Factory(queue.SimpleQueue)
    _done: collections.deque[Admission] = attrs.Factory(collections.deque)
    _token: trio.lowlevel.TrioToken | None = None
    _limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    # How many on the loop wait for a delivery (`wants`). The thread reads it after
    # leaving its outcomes in `_done`, the loop delivers after raising it: under the
    # interpreter lock one of the two sees the other, so no outcome waits unseen.
    _wanted: int = 0
    _stopped: bool = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `stop`. Not cancellable: jobs in flight hold cgroups and pidfds,
        so the thread always finishes them; `stop` is what ends it."""
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._serve, limiter=self._limiter)
        finally:
            self._deliver()

    def submit(self, job: Admission) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        """End `run` once the jobs queued before are done (once; later calls do nothing)."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(_STOP)

    def _serve(self) -> None:
        """In the thread: admit what is queued, hand it back, wait for more."""
        with _no_wakeup_preemption():
            self._serve_jobs()

    def _serve_jobs(self) -> None:
        assert self._token is not None
        while True:
            batch = [self._jobs.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._jobs.get_nowait())
            stop = False
            for job in batch:
                if job is _STOP:
                    stop = True
                    continue
                try:
                    job.cgroup, job.problem = admit(job.controller, job.memory_bytes, job.pidfd)
                except Exception:  # a bug: the job is still answered, as not admitted
                    log.exception("admitting a pool worker failed")
                    job.problem = "admission failed"
                finally:
                    with contextlib.suppress(OSError):
                        os.close(job.pidfd)
                self._done.append(job)
            if stop:
                return  # `run` delivers the rest
            if self._wanted:
                self._token.run_sync_soon(self._deliver)

    @contextlib.contextmanager
    def wants(self) -> Iterator[None]:
        """While the body waits (for something a delivery brings), wake the loop for
        every outcome; the outcomes already there are delivered on entry."""
        self._wanted += 1
        try:
            self._deliver()
            yield
        finally:
            self._wanted -= 1

    def deliver(self) -> None:
        """On the event loop: hand the finished jobs to their owners (cheap when none)."""
        if self._done:
            self._deliver()

    def _deliver(self) -> None:
        while self._done:
            job = self._done.popleft()
            job.deliver(job)
