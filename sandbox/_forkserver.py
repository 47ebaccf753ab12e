"""The pool's fork server: stdlib only, run inside one long-lived bubblewrap sandbox as
``/usr/bin/python3 -S -I _forkserver.py CONFIG_FD CONTROL_FD``.

It keeps ``k`` workers forked ahead of time. For each one the server makes a fresh work
directory and beside it the call's temporary directory (its TMPDIR: calls cannot use
the pool's shared /tmp), random names under the pool's tmpfs, and a fresh Landlock
ruleset (reads:
the system dirs and the declared paths; writes: that directory, the declared writable
paths and /dev/null; no TCP without network; ABI >= 6: no signals to, and no abstract
sockets of, any process outside the domain — its siblings included), the rules'
paths opened once for the whole pool (`Restrictions`). The worker, before it takes a
request: resets its signals, takes its own process group, sets no_new_privs, enters
that ruleset's domain, stacks the pool's extra seccomp filter (no setsid/setpgid, so
nothing leaves the group; without network no socket(AF_UNIX/AF_INET/AF_INET6)), puts
its stdio pipes on 0/1/2 and its request pipe on 3 and closes every other descriptor.
Then it blocks on fd 3.
The request sets the call's rlimits (RLIMIT_NOFILE last of all, after the descriptors
are closed), and the worker calls the tool's function or execs its program.

Protocol with the engine, over CONTROL_FD (SOCK_SEQPACKET): each request is one packet
of JSON ``{"limits": the call's rlimits, "gate": bool}`` carrying, by SCM_RIGHTS, one
end of a socket pair made by the engine for that call (the "reply socket"). The server
gives the limits to a ready worker and answers on the reply socket with ``{"pid": N}``
(N: the worker's pid in the sandbox) plus the worker's stdin, stdout and stderr
(SCM_RIGHTS), so the call's data never passes through the server. With ``"gate":
true`` the server writes nothing to the worker: it hands over the write end of the
worker's request pipe as a fourth descriptor, and the engine writes the limits there
once it has moved the worker into the call's memory cgroup (the worker blocks on that
pipe before it runs anything of the tool).
When the worker has ended the server kills its whole process group (grandchildren,
double-forked ones included: they cannot leave it), reaps it and sends one status
packet ``{"status": wait status, "cpu_time_s": .., "peak_memory_bytes": ..}`` on the
reply socket, which the worker never held, so nothing the tool does can forge it. Any
packet from the engine on a reply socket, or its closing, kills the worker's group
(timeout, cancellation). The control socket's closing ends the server (and with it the
sandbox: it is the sandbox's main process).

The server is a child subreaper, so orphaned grandchildren are reaped here. It imports
json, ctypes and the tool's module before `gc.freeze()`, so a forked worker pays no
import at call time and few copy-on-write faults.
"""

from __future__ import annotations

import array
import ctypes
import errno
import gc
import json
import marshal
import os
import resource
import selectors
import signal
import socket
import sys

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SETUP_FAILED = 125
_MAX_SETUP_FAILURES = 20


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
    the worker filter as a ready `sock_fprog`. Per worker the server makes a fresh
    ruleset holding these rules plus the worker's own directory (`ruleset_for`); the
    worker only calls landlock_restrict_self and prctl(PR_SET_SECCOMP). A ruleset is
    never shared: one worker's directory is never in another's domain.
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
        self.rules = []
        for path, access in wanted:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # missing paths are skipped, as _landlock.restrict does
            if not os.path.isdir(path):
                access &= _landlock._FILE_RIGHTS
            rule = _landlock._PathBeneathAttr(allowed_access=access & self.handled, parent_fd=fd)
            self.rules.append((fd, rule))
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
        ruleset = self._call(self.create, ctypes.byref(self.attr), ctypes.c_size_t(self.size), ctypes.c_uint32(0))
        try:
            for rule in (rule for _fd, rule in self.rules):
                self._add(ruleset, rule)
            for path in own:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    access = self.writable & self.handled
                    self._add(ruleset, _landlock._PathBeneathAttr(allowed_access=access, parent_fd=fd))
                finally:
                    os.close(fd)
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def _add(self, ruleset: int, rule: ctypes.Structure) -> None:
        self._call(self.add_rule, ctypes.c_int(ruleset), ctypes.c_int(_landlock._RULE_PATH_BENEATH),
                   ctypes.byref(rule), ctypes.c_uint32(0))  # fmt: skip

    def apply(self, ruleset: int) -> None:
        """In the worker: no_new_privs, the Landlock domain, the stacked seccomp filter."""
        if self.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        self._call(self.restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        os.close(ruleset)
        if self.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self.fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


class Server:
    def __init__(self, config: dict, control: socket.socket) -> None:
        self.config = config
        self.restrictions = Restrictions(config)
        self.control = control
        self.k = int(config["k"])
        # ready workers: pid -> (request pipe write end, stdin w, stdout r, stderr r, dir)
        self.ready: dict[int, tuple[int, int, int, int, str]] = {}
        # busy workers: pid -> (reply socket or None when the engine gave up, dir)
        self.busy: dict[int, tuple[socket.socket | None, str]] = {}
        self.selector = selectors.DefaultSelector()
        self.failures = 0
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake = wake_r
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.selector.register(control, selectors.EVENT_READ, "control")

    # -- workers ---------------------------------------------------------------------
    def fork_worker(self) -> bool:
        """Fork one worker that restricts itself and waits; False when fork failed."""
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        work = os.path.join(self.config["pool_dir"], "w-" + os.urandom(8).hex())
        ruleset = -1
        try:
            ruleset = self.restrictions.ruleset_for(work)
            pid = os.fork()
        except OSError:
            for fd in (request_r, request_w, stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w, ruleset):
                if fd >= 0:
                    os.close(fd)
            _remove(work)
            return False
        if pid == 0:
            _worker(self.config, work, stdin_r, stdout_w, stderr_w, request_r, self.restrictions, ruleset)
        for fd in (request_r, stdin_r, stdout_w, stderr_w, ruleset):
            os.close(fd)
        self.ready[pid] = (request_w, stdin_w, stdout_r, stderr_r, work)
        return True

    def refill(self) -> None:
        while len(self.ready) < self.k and self.failures < _MAX_SETUP_FAILURES:
            if not self.fork_worker():
                return  # EAGAIN (a fork bomb's RLIMIT_NPROC): retried later

    # -- events ----------------------------------------------------------------------
    def on_request(self) -> None:
        fds = array.array("i")
        try:
            data, ancdata, _flags, _addr = self.control.recvmsg(
                1 << 16, socket.CMSG_SPACE(4 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data:
            raise SystemExit(0)  # the engine is gone
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        reply = socket.socket(fileno=fds[0])
        if not self.ready:
            self.fork_worker()
        if not self.ready:
            _send(reply, {"error": "the pool cannot fork a worker (process limit reached)"})
            reply.close()
            return
        try:
            request = json.loads(data)
            limits = json.dumps(request["limits"]).encode()
            gate = request.get("gate") is True
        except (ValueError, KeyError, TypeError):
            _send(reply, {"error": "malformed request"})
            reply.close()
            return
        pid = next(iter(self.ready))
        request_w, stdin_w, stdout_r, stderr_r, work = self.ready.pop(pid)
        handed = [stdin_w, stdout_r, stderr_r]
        if gate:
            # The engine puts the worker in the call's memory cgroup, then writes the
            # limits itself: the worker runs nothing of the tool before they arrive.
            handed.append(request_w)
        else:
            try:
                _write_all(request_w, limits)
            except OSError:
                pass  # the worker died in set-up; its status tells the engine
        try:
            _send(reply, {"pid": pid}, handed)
        except OSError:
            reply.close()
            reply = None  # type: ignore[assignment]
            _killpg(pid)
        for fd in handed if gate else [*handed, request_w]:
            os.close(fd)
        self.busy[pid] = (reply, work)
        if reply is not None:
            self.selector.register(reply, selectors.EVENT_READ, pid)

    def on_reply_readable(self, pid: int) -> None:
        reply, work = self.busy[pid]
        assert reply is not None
        # Any packet, or the engine closing its end, means: kill the call.
        try:
            reply.recv(64)
        except OSError:
            pass
        self.selector.unregister(reply)
        _killpg(pid)

    def on_children(self) -> None:
        try:
            while os.read(self.wake, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            if pid in self.busy or pid in self.ready:
                # The unreaped leader keeps its group id from being reused: kill the
                # group (its grandchildren) before reaping it.
                _killpg(pid)
            _, status, usage = os.wait4(pid, 0)
            if pid in self.ready:
                entry = self.ready.pop(pid)
                for fd in entry[:4]:
                    os.close(fd)
                _remove(entry[4])
                self.failures += 1
                err = f"sconnect-pool: a worker died before its call (status {status})\n"
                os.write(2, err.encode())
            elif pid in self.busy:
                reply, work = self.busy.pop(pid)
                self.failures = 0
                if reply is not None:
                    try:
                        self.selector.unregister(reply)
                    except (KeyError, ValueError):
                        pass
                    _drain(reply)  # unread packets would turn our close into a reset
                    try:
                        _send(reply, {
                            "status": status,
                            "cpu_time_s": usage.ru_utime + usage.ru_stime,
                            "peak_memory_bytes": usage.ru_maxrss * 1024,
                        })  # fmt: skip
                    except OSError:
                        pass
                    reply.close()
                _remove(work)
            # else: an orphaned grandchild re-parented to us (subreaper); reaped above.

    def serve(self) -> None:
        self.refill()
        _send(self.control, {"ready": True, "workers": len(self.ready)})
        while True:
            # Refills wait for a moment with nothing else to do, one fork at a time: a
            # call's request or status is never queued behind a fork (two cores).
            short = len(self.ready) < self.k and self.failures < _MAX_SETUP_FAILURES
            events = self.selector.select(0 if short else None)
            for key, _events in events:
                if key.data == "wake":
                    self.on_children()
                elif key.data == "control":
                    self.on_request()
                elif isinstance(key.data, int) and key.data in self.busy:
                    self.on_reply_readable(key.data)
            if not events and short and not self.fork_worker():
                # EAGAIN (a fork bomb's RLIMIT_NPROC): wait for the next event.
                self.on_children()
                self.selector.select(0.05)


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(64, socket.MSG_DONTWAIT):
                return
        except OSError:
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _killpg(pgid: int) -> None:
    # Repeat until the group is empty: a fork bomb forks while we kill.
    for _ in range(1000):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        # killpg succeeds while the unreaped (zombie) leader is in the group: stop once
        # nothing else in it is alive.
        if not _group_has_live_members(pgid):
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
    _remove_tree(work)
    _remove_tree(_tmp_of(work))


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


def _worker(
    config: dict, work: str, stdin: int, stdout: int, stderr: int, request: int,
    restrictions: Restrictions, ruleset: int,
) -> None:
    """In the forked worker: restrict, wait for the request, run. Never returns."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        # Landlock (own domain: this worker's directory only) and the stacked filter
        # (no setsid/setpgid from here on), both prepared by the server.
        restrictions.apply(ruleset)
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        if request != 3:
            os.dup2(request, 3)
        os.closerange(4, 1 << 16)
        chunks = []
        while chunk := os.read(3, 1 << 16):
            chunks.append(chunk)
        os.close(3)
        if not chunks:
            os._exit(0)  # the server ended without giving us a call
        limits = json.loads(b"".join(chunks))
        # Every descriptor but 0/1/2 is closed by now, so a small RLIMIT_NOFILE cannot
        # starve the set-up above (it ran before the limit).
        _runner._set_limits(limits)
        os.chdir(config["cwd"] or work)
        # The tool's environment plus TMPDIR, the call's own temporary directory: /tmp is
        # the pool's, so Landlock keeps every call out of it. A tool's own TMPDIR wins.
        env = dict(config["env"])
        env.setdefault("TMPDIR", _tmp_of(work))
        if "tempfile" in sys.modules:
            # a tool module that asked at import time got the server's answer
            setattr(sys.modules["tempfile"], "tempdir", None)  # noqa: B010
        call = {"mode": config["mode"], "target": config["target"], "argv": config["argv"],
                "env": env, "sys_path": [], "report_fd": None}  # fmt: skip
    except BaseException as exc:
        os.write(2, f"sconnect-sandbox: setup failed: {exc!r}\n".encode())
        os._exit(_SETUP_FAILED)
    if call["mode"] == "call":
        os.environ.clear()
        os.environ.update(env)
        _runner._call(call)
    _runner._exec(call)


def main() -> None:
    config = _load(int(sys.argv[1]))
    control = socket.socket(fileno=int(sys.argv[2]))
    os.set_inheritable(control.fileno(), False)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for entry in reversed(config["sys_path"]):
        sys.path.insert(0, entry)
    import traceback  # noqa: F401  # a failing tool's traceback costs no import then

    if config["target"]:
        import importlib

        try:
            importlib.import_module(config["target"].partition(":")[0])
        except BaseException as exc:
            # The worker's own import reports the error on each call; say it once here.
            os.write(2, f"sconnect-pool: cannot preload {config['target']}: {exc!r}\n".encode())
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
