"""The in-sandbox runner: stdlib only, run as `python3 -I -S _runner.py CONFIG`.

CONFIG is either inline JSON or `--config-fd=N` (a `marshal`-ed dict read from fd N, so
that the tool's environment never shows in /proc/*/cmdline; marshal because importing
`json` costs ~8 ms and an exec'ed tool never needs it). Two jobs:

- ``mode: call`` — set rlimits, import ``module``, call ``function(**arguments)`` with
  the JSON read from stdin, print the JSON of the return value (through `_json`, the
  C half of `json`, with json's own results and errors: `_json_loads`). An exception prints its
  traceback to stderr (last line ``Type: message``) and exits 1.
- ``supervise: true`` (the process backend) — become a child subreaper; with
  ``private_proc``, move the next child into a new pid namespace (as root; otherwise
  inside a new user namespace mapping only our own uid); fork the tool (own session, in
  a private mount namespace a fresh /proc that shows only the tool's processes and a
  sized tmpfs on the work dir, rlimits, optional new network namespace, uid drop,
  no_new_privs, Landlock, capabilities cleared, the seccomp filter, then exec ``argv``
  or do the ``call`` above), wait for it, then SIGKILL every remaining descendant
  (double-forked, setsid'd ones included: they were re-parented to us); with
  ``cgroup_procs``, it first moves itself into the call's memory cgroup. On SIGTERM:
  SIGTERM the tool's tree, wait ``grace_s``, SIGKILL what is left. The tool's exit
  status and rusage are written as one JSON line to ``status_fd``.

- ``forward: {socket, port}`` (network by destination, namespaces backend) — before
  anything else, listen on 127.0.0.1:port in the sandbox's own network namespace and
  fork a forwarder that relays each connection to the engine's proxy at the Unix
  ``socket`` (one process, non-blocking, a bounded buffer per direction); then the
  ``call`` above. For a program rather than a function the runner is started as
  ``_runner.py --forward=SOCKET:PORT -- ARGV...`` instead: forwarder, then exec of ARGV
  with the environment bwrap set (no JSON to parse).

In a new pid namespace the first process is its init, which the kernel protects from
signals it has no handler for (SIGTERM, SIGXCPU, SIGXFSZ): so that the tool's limits and
the supervisor's SIGTERM act on it as without a namespace, that first process is a
small init that forks the tool, reaps orphans, and hands the tool's raw wait status to
the supervisor through a pipe. When it exits, the kernel kills what is left in the
namespace.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # without enum: ~0.35 MiB less to fork
import os
import resource
import sys
import time

EXEC_FAILED = 127
EXEC_MARKER = "sconnect-sandbox: cannot execute"
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND = 2, 4, 8, 32, 4096
_MS_REC, _MS_PRIVATE = 1 << 14, 1 << 18
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Terminate(Exception):
    pass


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare_net() -> bool:
    return bool(_libc().unshare(_CLONE_NEWNET) == 0)


def _new_pid_namespace() -> str | None:
    """Make our next child the first process of a new pid namespace; None or why not.

    As root a pid namespace alone; otherwise a user namespace too, mapping only our own
    uid and gid (so nothing gains an identity it did not have).
    """
    libc = _libc()
    if os.geteuid() == 0:
        if libc.unshare(_CLONE_NEWPID) == 0:
            return None
        return _ROOT_WITHOUT_SYS_ADMIN
    else:
        uid, gid = os.geteuid(), os.getegid()
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWPID) == 0:
            try:
                for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                                   ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
                    with open(f"/proc/self/{name}", "w") as handle:
                        handle.write(text)
            except OSError as exc:
                return f"user namespace maps: {exc.strerror}"
            return None
    import ctypes

    return os.strerror(ctypes.get_errno())


# Root without CAP_SYS_ADMIN (the shipped systemd unit's capability set): the pid
# namespace is made inside a user namespace whose maps the supervisor writes.
_ROOT_WITHOUT_SYS_ADMIN = "root without CAP_SYS_ADMIN"


def _fork_in_user_namespace(config: dict, handoff: int) -> tuple[int, str | None]:
    """Fork a child that makes a user + pid namespace (maps written by us, who keep
    CAP_SETUID/CAP_SETGID here: 0 and the drop uid/gid only) and forks the tool's
    namespace init; returns (child pid, None or why there is no namespace)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        made = _libc().unshare(_CLONE_NEWUSER | _CLONE_NEWPID) == 0
        import ctypes

        why = None if made else os.strerror(ctypes.get_errno())
        os.write(ready_w, b"1" if made else b"0")
        if os.read(go_r, 1) != b"1" and why is None:
            why = "the supervisor could not write the user namespace maps"
        os.close(ready_w)
        os.close(go_r)
        if why is not None:
            _tool_child(config, why, handoff)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stay until the init is gone
        init = os.fork()
        if init == 0:
            _tool_child(config, None, handoff)
        os.closerange(0, 1 << 16)
        while True:
            try:
                if os.waitpid(init, 0)[0] == init:
                    os._exit(0)
            except ChildProcessError:
                os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    ok = os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    why = None if ok else "unshare(CLONE_NEWUSER|CLONE_NEWPID) failed"
    if ok:
        drop = config.get("drop_to") or [0, 0]
        try:
            for name, ident in (("uid_map", drop[0]), ("gid_map", drop[1])):
                lines = "0 0 1\n" + (f"{ident} {ident} 1\n" if ident else "")
                with open(f"/proc/{pid}/{name}", "w") as handle:
                    handle.write(lines)
        except OSError as exc:
            ok, why = False, f"user namespace maps: {exc.strerror}"
    os.write(go_w, b"1" if ok else b"0")
    os.close(go_w)
    return pid, why


def _private_mounts(work: dict | None, writable: list, shm_bytes: int | None) -> bool:
    """A private mount namespace with its own /proc, sized tmpfs mounts on the work dir
    and /dev/shm, and the writable paths re-bound nosuid,nodev (as bubblewrap binds
    them). True when /dev/shm is the private one (the tool may then write there)."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    _check(
        libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mount /proc",
    )
    if work is not None:
        options = f"size={int(work['size'])},mode=0700,uid={int(work['uid'])},gid={int(work['gid'])}"
        _check(
            libc.mount(b"tmpfs", os.fsencode(work["path"]), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                       options.encode()),  # fmt: skip
            "mount the work dir",
        )
    for path in writable:
        target = os.fsencode(path)
        if not os.path.isdir(path):
            continue
        _check(libc.mount(target, target, None, _MS_BIND | _MS_REC, None), f"bind {path}")
        flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV
        _check(libc.mount(None, target, None, flags, None), f"remount {path} nosuid,nodev")
    if shm_bytes is None or not os.path.isdir("/dev/shm"):
        return False
    _check(
        libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                   f"size={int(shm_bytes)},mode=1777".encode()),  # fmt: skip
        "mount /dev/shm",
    )
    return True


def _clear_capabilities() -> None:
    """Drop every capability (a process in its own user namespace starts with all)."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc().capset(header, data), "capset")


def _load_seccomp(program: bytes) -> None:
    """Load a BPF program exported by libseccomp (struct sock_filter[]); needs no_new_privs."""
    import ctypes

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _Fprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = _libc()
    _check(
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
        "seccomp",
    )


def _set_limits(limits: dict[str, int]) -> None:
    names = {
        "as": resource.RLIMIT_AS,
        "cpu": resource.RLIMIT_CPU,
        "fsize": resource.RLIMIT_FSIZE,
        "nofile": resource.RLIMIT_NOFILE,
        "nproc": resource.RLIMIT_NPROC,
        "core": resource.RLIMIT_CORE,
    }
    for name, value in limits.items():
        soft = hard = int(value)
        if name == "cpu":
            hard = soft + 1  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.setrlimit(names[name], (soft, hard))


def _json_line(values: dict) -> bytes:
    """A flat dict of numbers/bools/None as one JSON line, without importing json."""
    def encode(value: object) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        return repr(value)

    return ("{" + ", ".join(f'"{k}": {encode(v)}' for k, v in values.items()) + "}\n").encode()


def _report(config: dict) -> None:
    """Write this process's peak RSS and CPU time to `report_fd` (namespaces backend only):
    bwrap's rusage carries the engine's peak RSS (vfork) and misses the tool's CPU time
    (bwrap's monitor never reaps the namespace's pid 1)."""
    fd = config.get("report_fd")
    if fd is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "peak_memory_bytes": max(usage.ru_maxrss, children.ru_maxrss) * 1024,
        "cpu_time_s": usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime,
    }
    try:
        os.write(int(fd), _json_line(report))
        os.close(int(fd))
    except OSError:
        pass


# JSON through `_json`, the C half of `json`, without the package: `json` imports re,
# enum, functools and collections (~1 MiB more for every pool worker to fork and tear
# down, ~25 page faults more in each), and its Python wrappers run on every call. These
# are the scanner and encoder json.loads and json.dumps use, with their default settings,
# so results and encoding errors are json's own. A document json.loads would not read
# as plain UTF-8 (a BOM, UTF-16/32), or any decoding error, goes to json.loads itself,
# for its exact result or exception.
_JSON_SPACE = " \t\n\r"


class _ScanContext:
    """What `_json.make_scanner` reads from a json.JSONDecoder() with no arguments."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _not_serializable(value: object) -> object:
    """json.JSONEncoder.default: the same error."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


_JSON_MARKERS: dict = {}  # json's circular-reference check; empty between encodings


def _json_codec():  # type: ignore[no-untyped-def]
    """(scanner, encoder, string encoder) as json.loads/json.dumps build them; None
    without a usable `_json`."""
    try:
        import _json  # type: ignore[import-not-found]

        encoder = _json.make_encoder(
            _JSON_MARKERS, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        return _json.make_scanner(_ScanContext()), encoder, _json.encode_basestring_ascii
    except (ImportError, AttributeError, TypeError):
        return None


_JSON = _json_codec()


def _json_loads(data: bytes | str) -> object:
    """json.loads(data)."""
    if _JSON is not None:
        text = data if isinstance(data, str) else None
        if isinstance(data, bytes) and data[:1] not in (b"\xef", b"\xfe", b"\xff") and b"\0" not in data[:4]:
            try:
                text = data.decode("utf-8", "surrogatepass")  # json.loads' decoding of UTF-8
            except UnicodeDecodeError:
                pass
        if text is not None:
            try:
                value, end = _JSON[0](text, len(text) - len(text.lstrip(_JSON_SPACE)))
                if end == len(text.rstrip(_JSON_SPACE)):
                    return value
            except Exception:  # noqa: BLE001  # json.loads below raises its own error
                pass
    import json

    return json.loads(data)


def _json_dumps(value: object) -> str:
    """json.dumps(value)."""
    if _JSON is None:
        import json

        return str(json.dumps(value))
    if isinstance(value, str):
        return str(_JSON[2](value))
    try:
        return "".join(_JSON[1](value, 0))
    except BaseException:
        _JSON_MARKERS.clear()  # a failed encoding leaves its path there
        raise


def _read_all(fd: int) -> bytes:
    """Everything up to EOF (the call's arguments), without the io layers (their seek,
    stat and buffer objects: pages a pool worker would copy on the call's path)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _warm_call(config: dict) -> None:
    """Touch what `_call` will use (json both ways, the stdio objects, the preloaded
    module), running nothing of the tool: in a pool worker forked ahead of time, the
    copy-on-write faults this costs happen before the call instead of during it."""
    data = _json_dumps(_json_loads(b'{"a": [1, 2.5, "x", null, true, {"b": false}]}'))
    _ = sys.stdout.flush, sys.stderr.flush
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        _write_all(null, data.encode() + b"\n")
        _read_all(null)
    finally:
        os.close(null)
    module_name, _, function_name = config["target"].partition(":")
    module = sys.modules.get(module_name)
    if module is not None:
        vars(module).get(function_name)  # never a module __getattr__: no tool code here


def _call(config: dict) -> None:
    """Import the tool's module and call its function; never returns."""
    if config.get("report_fd") is not None:
        os.set_inheritable(int(config["report_fd"]), False)  # not for the tool's children

        def on_cpu_limit(signum: int, frame: object) -> None:
            # Report the CPU time used, then die of SIGXCPU as if no handler existed.
            _report(config)
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGXCPU)

        signal.signal(signal.SIGXCPU, on_cpu_limit)
    for entry in reversed(config.get("sys_path", [])):
        sys.path.insert(0, entry)
    module_name, _, function_name = config["target"].partition(":")
    try:
        raw = _read_all(0)
        arguments = _json_loads(raw) if raw.strip() else {}
        module = sys.modules.get(module_name)  # preloaded by the pool's fork server
        if module is None:
            import importlib

            module = importlib.import_module(module_name)
        function = getattr(module, function_name)
        if isinstance(arguments, dict):
            value = function(**arguments)
        elif arguments is None:
            value = function()
        else:
            raise TypeError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        data = _json_dumps(value)
    except MemoryError:
        # The traceback itself may not fit in memory any more.
        os.write(2, b"MemoryError\n")
        _report(config)
        os._exit(1)
    except BaseException:
        # The interpreter's own display (C): the same text as traceback.print_exc(),
        # chained causes, source lines and carets included, without importing
        # traceback, linecache and tokenize (~7 ms in a fresh runner; ~0.4 MiB more for
        # every pool worker to fork and tear down, were they preloaded instead).
        sys.__excepthook__(*sys.exc_info())
        sys.stderr.flush()
        _report(config)
        os._exit(1)
    _report(config)
    sys.stdout.flush()  # what the tool printed, before the result
    _write_all(1, data.encode() + b"\n")  # not through sys.stdout's layers: fewer pages touched
    try:
        sys.stderr.flush()  # what the tool printed there, before its end of the pipe goes
    except (OSError, ValueError, AttributeError):  # closed, or replaced by the tool
        pass
    # EOF now, not after the exit's teardown: the reader is done with both outputs (in
    # one wake-up) while this process ends (its status still waits for the end).
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    os._exit(0)


def _exec(config: dict) -> None:
    argv = config["argv"]
    env = config.get("env", {})
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"{EXEC_MARKER} {argv[0]}: {exc.strerror}\n".encode())
    os._exit(EXEC_FAILED)


def _init(tool: int, handoff: int | None) -> None:
    """First process of the tool's pid namespace: reap until the tool ends, hand over
    its raw wait status, exit (the kernel then kills what is left). Never returns."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep = handoff if handoff is not None else 2
    os.closerange(0, 2)  # stdin, stdout: the tool's, not ours to hold open
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == tool:
            if handoff is not None:
                os.write(handoff, str(status).encode())
            os._exit(0)


def _tool_child(config: dict, namespace: str | None, handoff: int | None) -> None:
    """In the forked child: restrict, then exec or call. Never returns.

    `namespace` is None when this process is the first of a fresh pid namespace (else
    why there is none); `handoff` the pipe to the supervisor for the tool's status.
    """
    try:
        os.setsid()
        # Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, and the
        # file size limit must kill the tool, not make write() fail quietly.
        for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        private_shm = False
        if config.get("private_proc"):
            if namespace is not None:
                if config["private_proc"] == "require":
                    raise OSError(f"cannot hide the host's processes: {namespace}")
            else:
                private_shm = _private_mounts(
                    config.get("work_tmpfs"), config.get("nosuid_paths", []), config.get("shm_bytes")
                )
                tool = os.fork()
                if tool != 0:
                    _init(tool, handoff)
        if config.get("unshare_net"):
            # Tell the supervisor (which reports it) whether the tool lost its network.
            os.write(int(config["status_fd"]), _json_line({"netns": _unshare_net()}))
        _set_limits(config["limits"])
        drop = config.get("drop_to")
        if drop:
            os.setgroups([])
            os.setresgid(drop[1], drop[1], drop[1])
            os.setresuid(drop[0], drop[0], drop[0])
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        rules = config.get("landlock")
        if rules is not None:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import _landlock  # type: ignore[import-not-found]  # the runner's sibling copy

            del sys.path[0]
            _landlock.restrict(
                read_paths=tuple(rules["read"]),
                write_paths=tuple(rules["write"]) + (("/dev/shm",) if private_shm else ()),
                block_tcp=bool(rules["block_tcp"]),
            )
        os.chdir(config["cwd"])
        os.closerange(3, 1 << 16)
        _clear_capabilities()
        if config.get("seccomp") is not None:
            _load_seccomp(config["seccomp"])
    except BaseException as exc:
        os.write(2, f"sconnect-sandbox: setup failed: {exc!r}\n".encode())
        os._exit(EXEC_FAILED - 1)
    if config["mode"] == "call":
        os.environ.clear()
        os.environ.update(config.get("env", {}))
        _call(config)
    _exec(config)


def _descendants(root: int) -> list[int]:
    """Every descendant of `root`, from a scan of /proc (CONFIG_PROC_CHILDREN is often off)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _reap_all(statuses: dict[int, int]) -> None:
    """Reap every exited child, recording each status (the tool's among them)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status


def _kill_tree(sig: int) -> int:
    pids = _descendants(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return len(pids)


def _supervise(config: dict) -> None:
    terminated = False

    def on_term(signum: int, frame: object) -> None:
        raise _Terminate

    signal.signal(signal.SIGTERM, on_term)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    status_fd = int(config["status_fd"])
    if config.get("cgroup_procs"):
        # Into the call's memory cgroup before the tool is forked: all it runs inherits it.
        try:
            with open(config["cgroup_procs"], "w") as handle:
                handle.write(str(os.getpid()))
            os.write(status_fd, _json_line({"cgroup": True}))
        except OSError:
            os.write(status_fd, _json_line({"cgroup": False}))
    namespace = _new_pid_namespace() if config.get("private_proc") else "not asked for"
    handoff_r, handoff_w = os.pipe()
    if namespace == _ROOT_WITHOUT_SYS_ADMIN:
        pid, namespace = _fork_in_user_namespace(config, handoff_w)
    else:
        pid = os.fork()
        if pid == 0:
            os.close(handoff_r)
            _tool_child(config, namespace, handoff_w)
    os.close(handoff_w)
    status: int | None = None
    try:
        _, status, _ = os.wait4(pid, 0)
    except _Terminate:
        terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    statuses: dict[int, int] = {}
    if terminated:
        _kill_tree(signal.SIGTERM)
        deadline = time.monotonic() + float(config.get("grace_s", 0.5))
        while time.monotonic() < deadline and pid not in statuses:
            _reap_all(statuses)
            time.sleep(0.01)
    # Kill whatever is left: descendants that outlived the tool were re-parented to us.
    for _ in range(5000):
        _reap_all(statuses)
        if _kill_tree(signal.SIGKILL) == 0 and (status is not None or pid in statuses):
            break
        time.sleep(0.002)
    _reap_all(statuses)
    if status is None:
        status = statuses.get(pid)
    handed = os.read(handoff_r, 64)  # the namespace init's report of the tool's status
    if handed:
        status = int(handed)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "exit_code": os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
        "cpu_time_s": usage.ru_utime + usage.ru_stime,
        "peak_memory_bytes": usage.ru_maxrss * 1024,
        "terminated": terminated,
        "private_proc": namespace is None,
    }
    os.write(status_fd, _json_line(report))
    os._exit(0)


def _start_forwarder(forward: dict) -> None:
    """Listen on 127.0.0.1:port, then fork the forwarder (which never returns)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(forward["port"])))
    listener.listen(64)
    if os.fork() == 0:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # never hold the tool's stdout open
            # At most ~60 connection pairs (each with at most two 64 KiB chunks in flight):
            # the proxy allows 16 at once anyway, and the forwarder is not under the
            # tool's memory limit.
            resource.setrlimit(resource.RLIMIT_NOFILE, (_FORWARDER_FILES, _FORWARDER_FILES))
            _forward(listener, str(forward["socket"]))
        finally:
            os._exit(0)
    listener.close()


_CHUNK = 65536
_FORWARDER_FILES = 128


def _forward(listener: object, path: str) -> None:
    """Relay every connection accepted on ``listener`` to the Unix socket ``path``.

    Each direction holds at most one unsent chunk: while it waits, its source is not
    read (backpressure), so memory stays bounded whatever the two ends do. An end's EOF
    is passed on (shutdown) once what it sent is written; a pair is closed when both
    directions are done, or at the first error on either side.
    """
    import selectors
    import socket

    assert isinstance(listener, socket.socket)
    read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, read)
    peer: dict[socket.socket, socket.socket] = {}
    out: dict[socket.socket, bytes] = {}  # bytes waiting to be written to the key
    eof: set[socket.socket] = set()  # sockets that sent EOF
    shut: set[socket.socket] = set()  # sockets whose write side we shut down
    interest: dict[socket.socket, int] = {}

    paused = [False]  # out of descriptors: stop accepting until a pair is closed

    def pause() -> None:
        if peer and not paused[0]:
            selector.unregister(listener)
            paused[0] = True

    def drop(sock: socket.socket) -> None:
        if paused[0]:
            selector.register(listener, read)
            paused[0] = False
        for one in (sock, peer.get(sock)):
            if one is None or one not in peer:
                continue
            if interest.pop(one, 0):
                selector.unregister(one)
            one.close()
            del peer[one]
            out.pop(one, None)
            eof.discard(one)
            shut.discard(one)

    def settle(sock: socket.socket) -> None:
        other = peer[sock]
        if not out[sock] and other in eof and sock not in shut:
            sock.shutdown(socket.SHUT_WR)
            shut.add(sock)
        if sock in shut and other in shut:
            drop(sock)
            return
        events = (0 if sock in eof or out[other] else read) | (write if out[sock] else 0)
        old = interest.get(sock, 0)
        if events == old:
            return
        if not events:
            selector.unregister(sock)
            del interest[sock]
        elif not old:
            selector.register(sock, events)
            interest[sock] = events
        else:
            selector.modify(sock, events)
            interest[sock] = events

    while True:
        for key, mask in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                try:
                    client, _ = listener.accept()
                except BlockingIOError:
                    continue
                except OSError:
                    pause()  # no descriptor left (EMFILE): a readable listener would spin this loop
                    continue
                try:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                except OSError:
                    client.close()
                    pause()
                    continue
                try:
                    upstream.connect(path)
                except OSError:
                    client.close()
                    upstream.close()
                    continue
                for one, other in ((client, upstream), (upstream, client)):
                    one.setblocking(False)
                    peer[one], out[one] = other, b""
                settle(client)
                settle(upstream)
                continue
            if sock not in peer:
                continue
            other = peer[sock]
            try:
                if mask & write and out[sock]:
                    out[sock] = out[sock][sock.send(out[sock]) :]
                if mask & read and sock not in eof and not out[other]:
                    data = sock.recv(_CHUNK)
                    if data:
                        out[other] = data
                        try:
                            out[other] = data[other.send(data) :]
                        except BlockingIOError:
                            pass
                    else:
                        eof.add(sock)
                settle(sock)
                if other in peer:
                    settle(other)
            except BlockingIOError:
                continue
            except OSError:
                drop(sock)


def main() -> None:
    arg = sys.argv[1]
    if arg.startswith("--forward="):
        # Forwarder, then exec: ``--forward=SOCKET:PORT -- ARGV...`` (bwrap set the
        # environment; prlimit in ARGV sets the limits).
        where, _, port = arg.split("=", 1)[1].rpartition(":")
        _start_forwarder({"socket": where, "port": int(port)})
        argv = sys.argv[3:]
        try:
            os.execv(argv[0], argv)
        except OSError as exc:
            os.write(2, f"{EXEC_MARKER} {argv[0]}: {exc.strerror}\n".encode())
        os._exit(EXEC_FAILED)
    if arg.startswith("--config-fd="):
        fd = int(arg.split("=", 1)[1])
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        import marshal

        config = marshal.loads(b"".join(chunks))
    else:
        config = _json_loads(arg)
    if config.get("supervise"):
        _supervise(config)
    if config.get("forward"):
        _start_forwarder(config["forward"])
    _set_limits(config["limits"])
    _call(config)


if __name__ == "__main__":
    main()
