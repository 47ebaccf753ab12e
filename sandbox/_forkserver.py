"""The pool's fork server: stdlib only, run inside one long-lived bubblewrap sandbox as
``/usr/bin/python3 -S -I -c "...import _forkserver; _forkserver.main()" CONFIG_FD
CONTROL_FD`` (imported, so that its staged bytecode is used).

It forks workers when the engine asks for them, each with a random name under the
pool's tmpfs. The worker, before it takes a call: takes its own process group, makes its
work directory and beside it the call's temporary directory (its TMPDIR: calls cannot
use the pool's shared /tmp), sets no_new_privs, enters a Landlock domain of its own
made from a fresh ruleset (reads: the system dirs and the declared paths; writes: those
two directories, the declared writable paths and /dev/null; no TCP without network; ABI
>= 6: no signals to, and no abstract sockets of, any process outside the domain — its
siblings included; the rules' paths opened once for the whole pool, `Restrictions`),
stacks the pool's extra seccomp filter (no setsid/setpgid, so nothing leaves the group;
without network no socket(AF_UNIX/AF_INET/AF_INET6)), puts its stdio pipes on 0/1/2 and
its request pipe on 3, closes every other descriptor, and does every step of its set-up
that does not depend on the call (working directory, environment). Then it blocks on fd
3. Signal dispositions are the defaults already: the server sets them once.
The request is the call's rlimits (`marshal`-ed by the engine), set last of all (after
the descriptors are closed), and the worker calls the tool's function or execs its
program.

Protocol with the engine, over CONTROL_FD (SOCK_SEQPACKET, one message a packet):

- engine -> server: ``F`` + a decimal count: fork that many workers. An empty read
  (the engine closed its end) ends the server, and with it the sandbox (it is the
  sandbox's main process).
- server -> engine: ``R`` once, when ready; for each forked worker ``W`` + its pid in
  the sandbox (4 bytes), carrying by SCM_RIGHTS the write end of its request pipe, its
  stdin, stdout and stderr (the engine's ends), the engine's end of a socket pair made
  for this worker (its "reply socket"), and, when the config asks for them
  (``pidfds``), a pidfd of the worker (the engine moves it into a memory cgroup by it);
  ``E`` + a reason when requested forks failed (``E`` + count + ``:`` + text).

The engine holds its ready workers itself: a call writes the worker's stdin and then
its limits (the go-ahead) straight into the worker's pipes, so the server is off the
call's path until the end. When the worker has ended the server kills its whole process
group (grandchildren, double-forked ones included: they cannot leave it), reaps it and
sends one status packet on the reply socket (`STATUS`: wait status, CPU microseconds,
peak RSS in KiB), which the worker never held, so nothing the tool does can forge it.
The engine's ends of the output pipes are non-blocking: it reads what they hold once
the status has come. After the status the server yields its core (the engine it woke
is often queued there) before its bookkeeping, and after each batch of forks it writes
once what the next status will write (`Server.rehearse`), so that the copies those
writes cost after a fork are not made between a worker's end and its status.
Any packet from the engine on a reply socket, or its closing, kills the worker's group
(timeout, cancellation, or a ready worker the engine lets go).

The server is a child subreaper, so orphaned grandchildren are reaped here. It imports
ctypes (and for a function tool the tool's module) before `gc.freeze()`, so a forked
worker pays no import at call time and few copy-on-write faults. JSON goes through
`_json` alone (`_runner._json_loads`): the `json` package would bring re, enum and
more, ~1 MiB for every worker to fork and tear down. Forks are made one at a time,
after the events at hand: a status is never queued behind more than the fork in
progress.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum wrappers
import _socket
import ctypes
import errno
import gc
import marshal
import os
import resource
import select
import struct
import sys

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SETUP_FAILED = 125
_SIGKILL = 9
STATUS = struct.Struct("=iqq")  # wait status, CPU time in microseconds, peak RSS in KiB
_PID = struct.Struct("=i")


def _load(fd: int) -> dict:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return marshal.loads(b"".join(chunks))


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Restrictions:
    """What every worker of this pool applies, prepared once in the server.

    The same rules `_landlock.restrict` makes (the paths opened once here, O_PATH), and
    the worker filter as a ready `sock_fprog`. Each worker makes its own directories and
    a fresh ruleset holding these rules plus those directories (`ruleset_for`), then
    calls landlock_restrict_self and prctl(PR_SET_SECCOMP). A ruleset is never shared:
    one worker's directory is never in another's domain.
    """

    def __init__(self, config: dict) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.prctl = libc.prctl
        numbers = _landlock._SYSCALLS.get(os.uname().machine)
        abi = _landlock.abi_version()
        if numbers is None or abi is None:
            raise OSError(errno.ENOSYS, "Landlock is not available")
        self.create, self.add_rule, self.restrict_self = numbers
        self.handled = _landlock._handled_fs(abi)
        rules = config["landlock"]
        self.attr = _landlock._RulesetAttr(handled_access_fs=self.handled, handled_access_net=0, scoped=0)
        self.size = 8
        if abi >= 4:
            self.size = 16
            if rules["block_tcp"]:
                self.attr.handled_access_net = _landlock.NET_BIND_TCP | _landlock.NET_CONNECT_TCP
        if abi >= 6:
            self.size = 24
            self.attr.scoped = _landlock.SCOPE_ABSTRACT_UNIX_SOCKET | _landlock.SCOPE_SIGNAL
        self.writable = _landlock._READ | (self.handled & ~_landlock._READ & ~_landlock.FS_IOCTL_DEV)
        wanted = [(path, _landlock._READ) for path in rules["read"]]
        wanted += [(path, self.writable) for path in rules["write"]]
        wanted += [("/dev/null", _landlock.FS_READ_FILE | _landlock.FS_WRITE_FILE | _landlock.FS_TRUNCATE)]
        found = []  # (where the rule lands, its rights, an O_PATH fd of it)
        for path, access in wanted:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # missing paths are skipped, as _landlock.restrict does
            if not os.path.isdir(path):
                access &= _landlock._FILE_RIGHTS
            found.append((os.path.realpath(path), access & self.handled, fd))
        self.rules = []
        for index, (_where, access, fd) in enumerate(found):
            if _covered(index, found):
                os.close(fd)  # every worker would add it for nothing (/bin -> /usr/bin)
                continue
            rule = _landlock._PathBeneathAttr(allowed_access=access, parent_fd=fd)
            self.rules.append((fd, rule))
        # the syscalls' arguments, built once: fewer objects made (and pages touched) per fork
        self.create_args = (self.create, ctypes.byref(self.attr), ctypes.c_size_t(self.size), ctypes.c_uint32(0))
        self.beneath = ctypes.c_int(_landlock._RULE_PATH_BENEATH)
        self.zero = ctypes.c_uint32(0)
        self.rule_refs = [ctypes.byref(rule) for _fd, rule in self.rules]
        program = config["filter"]
        self.filter = ctypes.create_string_buffer(program, len(program))
        self.fprog = _Fprog(len(program) // 8, ctypes.cast(self.filter, ctypes.c_void_p))

    def _call(self, *args: object) -> int:
        result = int(self.syscall(*args))
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result

    def ruleset_for(self, work: str) -> int:
        """A new ruleset fd: the pool's rules, `work` and `_tmp_of(work)` (made here,
        0700) writable."""
        own = (work, _tmp_of(work))
        for path in own:
            os.mkdir(path, 0o700)
        ruleset = self._call(*self.create_args)
        try:
            number, kind, zero = self.add_rule, self.beneath, self.zero
            target = ctypes.c_int(ruleset)
            for rule in self.rule_refs:
                self._call(number, target, kind, rule, zero)
            for path in own:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    own_rule = _landlock._PathBeneathAttr(allowed_access=self.writable & self.handled, parent_fd=fd)
                    self._call(number, target, kind, ctypes.byref(own_rule), zero)
                finally:
                    os.close(fd)
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def apply(self, ruleset: int) -> None:
        """In the worker: no_new_privs, the Landlock domain, the stacked seccomp filter."""
        if self.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        self._call(self.restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        os.close(ruleset)
        if self.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self.fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _covered(index: int, found: list[tuple[str, int, int]]) -> bool:
    """Whether rule `index` grants nothing that another rule on it or on one of its
    parents does not already grant (Landlock allows what any rule on the way up allows)."""
    where, access, _fd = found[index]
    for other, (place, rights, _) in enumerate(found):
        if other == index or access & ~rights:
            continue
        if place == where:
            if other < index:  # of two equal rules the first stays
                return True
        elif where.startswith(place.rstrip("/") + "/"):
            return True
    return False


class Server:
    def __init__(self, config: dict, control: _socket.socket) -> None:
        self.config = config
        self.restrictions = Restrictions(config)
        self.control = control
        self.pidfds = bool(config.get("pidfds"))
        # every live worker, ready or in a call: pid -> (our end of its reply socket, its
        # directory, a pidfd that turns readable when it exits)
        self.workers: dict[int, tuple[_socket.socket, str, int]] = {}
        self.replies: dict[int, int] = {}  # reply socket fd -> worker pid, while watched
        self.exits: dict[int, int] = {}  # worker pidfd -> worker pid
        self.to_fork = 0  # forks the engine asked for and not yet made
        self.poll = select.epoll()
        self.poll.register(control.fileno(), select.EPOLLIN)

    # -- workers ---------------------------------------------------------------------
    def fork_worker(self) -> bool:
        """Fork one worker that restricts itself and waits, and hand its ends to the
        engine; False when fork failed."""
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        work = self.config["pool_dir"] + "/w-" + os.urandom(8).hex()
        try:
            pid = os.fork()
        except OSError:
            for fd in (request_r, request_w, stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w):
                os.close(fd)
            ours.close()
            theirs.close()
            return False
        if pid == 0:
            _worker(self.config, work, (stdin_r, stdout_w, stderr_w, request_r), self.restrictions)
        for fd in (request_r, stdin_r, stdout_w, stderr_w):
            os.close(fd)
        # The engine writes a call's whole input at once: a large one must not block it;
        # it reads what the outputs hold once the status says the call is over.
        for fd in (stdin_w, stdout_r, stderr_r):
            os.set_blocking(fd, False)
        exited = os.pidfd_open(pid)
        handed = [request_w, stdin_w, stdout_r, stderr_r, theirs.fileno()]
        if self.pidfds:
            handed.append(exited)
        self.workers[pid] = (ours, work, exited)
        self.replies[ours.fileno()] = pid
        self.exits[exited] = pid
        self.poll.register(ours.fileno(), select.EPOLLIN)
        self.poll.register(exited, select.EPOLLIN)
        try:
            # struct, not array: array imports collections (~0.5 MiB more to fork per worker)
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(handed)}i", *handed))]
            self.control.sendmsg([b"W" + _PID.pack(pid)], rights, _socket.MSG_NOSIGNAL)
        except OSError:
            self.kill(pid)  # the engine is gone; the control socket's EOF ends us next
        finally:
            for fd in handed[:4]:
                os.close(fd)
            theirs.close()
        return True

    def kill(self, pid: int) -> None:
        """Kill a worker's group (a call ended early, or the engine let it go). The
        status waits for `on_exits`, which makes sure nothing of the group lives."""
        entry = self.workers.get(pid)
        if entry is not None and entry[0].fileno() in self.replies:
            self._unwatch(entry[0].fileno(), self.replies)
        for kill in (os.killpg, os.kill):  # a worker still in set-up may have no group yet
            try:
                kill(pid, _SIGKILL)
            except OSError:
                pass

    def empty_group(self, pgid: int) -> None:
        """Return once nothing of an exited worker's group is alive. Called after the
        group was SIGKILLed (its unreaped leader keeping the id) and the leader reaped.

        The common case costs one kill(): no process has the group id any more. While
        any process has it, the id cannot be given to a new process (the kernel frees a
        pid only when no task uses it as pid, group or session id), and no member can
        leave the group (setsid/setpgid are denied), so an answer of "no such group"
        means every member is gone.
        """
        try:
            os.killpg(pgid, 0)
        except OSError:
            return  # ESRCH: the common case, the tool left no process behind
        # Members remain: killed a moment ago and not yet dead, or zombies re-parented
        # to us (reaped by `on_exits`). Repeat until no live one is left: a fork bomb
        # forks while we kill.
        for _ in range(1000):
            if not _group_has_live_members(pgid):
                return
            try:
                os.killpg(pgid, _SIGKILL)
            except OSError:
                return

    def rehearse(self) -> None:
        """Write, once after forking, what the next status will write (after a fork every
        page of ours is shared with the new worker: the first write to each one copies
        it). Those copies are then made here, not between a worker's end and its
        status: the objects of the live workers, the tables that map them, and the
        allocations and the error the status path makes (`finish`, `empty_group`)."""
        for reply, _work, _exited in self.workers.values():
            reply.fileno()
        for pid in list(self.workers):
            self.workers[pid] = self.workers[pid]
        for fds in (self.replies, self.exits):
            for fd in list(fds):
                fds[fd] = fds[fd]
        resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            os.killpg(0x7FFFFFFF, 0)  # no such group: the error the common case raises
        except OSError:
            pass
        STATUS.pack(0, round(0.5 * 1e6), 0)

    def _unwatch(self, fd: int, table: dict[int, int]) -> None:
        del table[fd]
        self.poll.unregister(fd)

    # -- events ----------------------------------------------------------------------
    def on_control(self) -> None:
        try:
            data = self.control.recv(64, _socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise SystemExit(0)  # the engine is gone
        if data[:1] == b"F" and data[1:].isdigit():
            self.to_fork += int(data[1:])

    def on_reply_readable(self, fd: int) -> None:
        pid = self.replies[fd]
        # Any packet, or the engine closing its end, means: kill the call.
        try:
            self.workers[pid][0].recv(64, _socket.MSG_DONTWAIT)
        except OSError:
            pass
        self.kill(pid)

    def on_exits(self, first: int | None = None) -> None:
        """Reap every exited child: a worker's group is killed first and its status sent;
        an orphaned grandchild re-parented to us (subreaper) is only reaped. `first`, a
        worker whose pidfd says it exited, is done before the scan: its status waits
        for no waitid of ours."""
        if first is not None:
            self.finish(first)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            if info.si_pid in self.workers:
                self.finish(info.si_pid)
            else:
                os.wait4(info.si_pid, 0)

    def finish(self, pid: int) -> None:
        """An exited worker: kill its group, reap it, send its status, forget it."""
        reply, work, exited = self.workers.pop(pid)
        # The unreaped leader keeps its group id from being reused: kill the group (its
        # grandchildren) before reaping it.
        try:
            os.killpg(pid, _SIGKILL)
        except OSError:
            pass
        _, status, usage = os.wait4(pid, 0)
        self.empty_group(pid)
        cpu_us = round((usage.ru_utime + usage.ru_stime) * 1e6)
        try:
            reply.send(STATUS.pack(status, cpu_us, usage.ru_maxrss), _socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the engine let the worker go, or gave up on the call
        # The engine, woken by the status, is often queued on this core (a wake-up from
        # a socket is placed beside its waker): let it run before the bookkeeping below.
        os.sched_yield()
        # Bookkeeping after the status, which the call waits for.
        _drain(reply)  # unread packets would turn our close into a reset
        if reply.fileno() in self.replies:
            self._unwatch(reply.fileno(), self.replies)
        self._unwatch(exited, self.exits)
        os.close(exited)
        reply.close()
        _remove(work)

    def serve(self) -> None:
        self.control.send(b"R", _socket.MSG_NOSIGNAL)
        replies, exits, control = self.replies, self.exits, self.control.fileno()
        while True:
            # Events first, then one fork: a status is never queued behind more than the
            # fork in progress (two cores), and a steady stream of events cannot starve
            # the forks that waiting calls need.
            for fd, _mask in self.poll.poll(0 if self.to_fork else -1):
                if fd in exits:
                    self.on_exits(exits[fd])
                elif fd in replies:
                    self.on_reply_readable(fd)
                elif fd == control:
                    self.on_control()
            if not self.to_fork:
                continue
            if self.fork_worker():
                self.to_fork -= 1
                if not self.to_fork:
                    self.rehearse()
                continue
            # EAGAIN (a fork bomb's RLIMIT_NPROC): say so for every fork asked for, so
            # that no call waits for a worker that will not come.
            why = f"E{self.to_fork}:the pool cannot fork a worker (process limit reached)"
            try:
                self.control.send(why.encode(), _socket.MSG_NOSIGNAL)
            except OSError:
                pass
            self.to_fork = 0
            self.on_exits()


def _drain(sock: _socket.socket) -> None:
    while True:
        try:
            if not sock.recv(64, _socket.MSG_DONTWAIT):
                return
        except OSError:
            return


def _group_has_live_members(pgid: int) -> bool:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _tmp_of(work: str) -> str:
    """A call's TMPDIR: beside its work directory, on the pool's sized tmpfs, in its own
    Landlock domain only, removed with it."""
    return work + "-tmp"


def _remove(work: str) -> None:
    """Remove a worker's directory and its TMPDIR."""
    for path in (work, _tmp_of(work)):
        try:
            os.rmdir(path)  # most calls leave nothing behind: one syscall
        except FileNotFoundError:
            pass
        except OSError:
            _remove_tree(path)


def _remove_tree(path: str) -> None:
    """Remove a directory (its tool may have made parts of it unwritable)."""
    if not os.path.lexists(path):
        return
    for top, dirs, files in os.walk(path, topdown=False, onerror=lambda exc: None):
        for name in files:
            try:
                os.unlink(os.path.join(top, name))
            except OSError:
                pass
        for name in dirs:
            full = os.path.join(top, name)
            try:
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass
    if os.path.isdir(path) and not os.path.islink(path):
        # chmod 000 subdirectories: make everything ours again, then once more.
        for top, dirs, _files in os.walk(path):
            for name in dirs:
                try:
                    os.chmod(os.path.join(top, name), 0o700)
                except OSError:
                    pass
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass


def _worker(config: dict, work: str, stdio: tuple[int, int, int, int], restrictions: Restrictions) -> None:
    """In the forked worker: restrict, prepare, wait for the call, run. Never returns."""
    stdin, stdout, stderr, request = stdio
    try:
        # Signal dispositions are the defaults already (set once in `main`).
        os.setpgid(0, 0)
        # Landlock (own domain: this worker's directories only, made here; the ruleset
        # made here too, not in the server: what the server touches after each fork it
        # copies) and the stacked filter (no setsid/setpgid from here on).
        restrictions.apply(restrictions.ruleset_for(work))
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        if request != 3:
            os.dup2(request, 3)
        os.closerange(4, 1 << 16)
        # Everything that does not depend on the call, before waiting for it.
        os.chdir(config["cwd"] or work)
        # The tool's environment (the server's own, set in `main`) plus TMPDIR, the call's
        # own temporary directory: /tmp is the pool's, so Landlock keeps every call out of
        # it. A tool's own TMPDIR wins.
        env = config["env"]
        if "TMPDIR" not in env:
            env = {**env, "TMPDIR": _tmp_of(work)}
            if config["mode"] == "call":
                os.environ["TMPDIR"] = env["TMPDIR"]
        if "tempfile" in sys.modules:
            # a tool module that asked at import time got the server's answer
            setattr(sys.modules["tempfile"], "tempdir", None)  # noqa: B010
        call = {"mode": config["mode"], "target": config["target"], "argv": config["argv"],
                "env": env, "sys_path": [], "report_fd": None}  # fmt: skip
        if call["mode"] == "call":
            _runner._warm_call(call)
        chunks = []
        while chunk := os.read(3, 4096):
            chunks.append(chunk)
        os.close(3)
        if not chunks:
            os._exit(0)  # let go without a call (the engine closed the pipe)
        # Every descriptor but 0/1/2 is closed by now, so a small RLIMIT_NOFILE cannot
        # starve the set-up above (it ran before the limit). RLIMIT_NOFILE comes last.
        setrlimit = resource.setrlimit
        for number, soft, hard in marshal.loads(b"".join(chunks)):
            setrlimit(number, (soft, hard))
    except BaseException as exc:
        os.write(2, f"sconnect-sandbox: setup failed: {exc!r}\n".encode())
        os._exit(_SETUP_FAILED)
    if call["mode"] == "call":
        _runner._call(call)
    _runner._exec(call)


def main() -> None:
    config = _load(int(sys.argv[1]))
    control = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, int(sys.argv[2]))
    os.set_inheritable(control.fileno(), False)
    # Default dispositions once, here, rather than in every worker: Python ignores
    # SIGPIPE and SIGXFSZ, and ignored dispositions survive exec (the file size limit
    # must kill the tool, not make write() fail quietly). The server sends with
    # MSG_NOSIGNAL and learns of exits by pidfd, so it needs neither.
    for number in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(number, _signal.SIG_DFL)
    # The tool's environment, exactly (bubblewrap set it; this only makes sure).
    if dict(os.environ) != config["env"]:
        os.environ.clear()
        os.environ.update(config["env"])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for entry in reversed(config["sys_path"]):
        sys.path.insert(0, entry)
    if config["target"]:
        import importlib

        try:
            importlib.import_module(config["target"].partition(":")[0])
        except BaseException as exc:
            # The worker's own import reports the error on each call; say it once here.
            os.write(2, f"sconnect-pool: cannot preload {config['target']}: {exc!r}\n".encode())
        # The runner's machinery, run here on dummy data until the interpreter has
        # specialised it (3.11: after 8 runs; never the tool's code): a worker's own
        # warm-up (`_runner._warm_call`) then writes no warm-up counter into those code
        # objects, ~23 copy-on-write faults fewer in every worker's set-up.
        for _ in range(16):
            _runner._warm_call({"target": config["target"]})
    gc.collect()
    gc.freeze()
    try:
        Server(config, control).serve()
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _landlock  # type: ignore[import-not-found]  # noqa: E402,F401  # imported before fork
import _runner  # type: ignore[import-not-found]  # noqa: E402

if __name__ == "__main__":
    main()
