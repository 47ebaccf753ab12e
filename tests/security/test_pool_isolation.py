"""Attacks on the warm pool backend (`isolation: pool`), each performed for real.

Calls of one pool share one bubblewrap sandbox (pid and network namespace, tmpfs), so
besides the usual escapes these tests attack a live sibling call of the same pool:

- test_sibling_files_proc_and_signals_are_out_of_reach: a "victim" call keeps a secret
  in its own work directory and publishes its directory and pid; a concurrent
  "attacker" call of the same pool tries to read, overwrite and list that directory,
  open /proc/PID/mem, /proc/PID/environ and /proc/PID/cwd, ptrace-attach it and
  signal it. Every attempt fails, the victim finishes untouched.
- test_server_init_and_everyone_cannot_be_killed: a call SIGKILLs the fork server (its
  parent), bubblewrap's init (pid 1) and every pid (kill(-1)); all refused, and the
  same pool serves the next call.
- test_no_tcp_or_udp_between_siblings: a call tries to listen on TCP and UDP on the
  pool's loopback and to connect/send to it; socket() itself is refused (EPERM), as is
  a unix socket; control: the same code with `network: true` creates the sockets.
- test_etc_shadow_and_init_environment: /etc/shadow is absent, /proc/1/environ unreadable.
- test_memory_bomb_is_stopped / test_cpu_spin_is_killed_and_the_pool_keeps_serving:
  limit_exceeded, and the pool's next call still works.
- test_fork_bomb_leaves_nothing: a fork bomb named by a marker ends limited, and no
  process carrying the marker is left.
- test_grandchildren_die_on_timeout_and_on_return: a double-forked grandchild that
  tries setsid() (refused) is killed when its call times out and when it returns.

The fork bomb and the hanging call end by their timeout: a short one (1 s), with the
call watched until the attack is seen under way in /proc (several bomb processes, the
grandchild); a call that timed out before that is run again with twice the time.
- test_exec_cannot_forge_a_result_frame: an exec'd program writing a fake status to
  every descriptor from 3 up gets EBADF; the real exit code is reported.
"""

# ruff: noqa: F811  (pytest fixtures imported from the sandbox conftest are parameters here)
from __future__ import annotations

import os
from typing import Any

import pytest
import trio

import sandbox
from tests.sandbox.conftest import (  # noqa: F401, F811  (fixtures)
    alive,
    no_leftovers,
    runner_for,
    shared_dir,
    token,
    token_processes,
    wait_until,
    work_root,
)

PY = ("/usr/bin/python3", "-I", "-S", "-c")

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)


def comm_processes(marker: str) -> list[int]:
    """Live host processes whose name (comm) is `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as handle:
                    if handle.read().strip() == marker and alive(int(name)):
                        found.append(int(name))
            except OSError:
                continue
    return found


SIBLINGS = r"""
import ctypes, json, os, signal, sys, time
args = json.load(sys.stdin)
shared = args["shared"]
def wait_for(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("sibling never came")
        time.sleep(0.005)
if args["role"] == "victim":
    with open("secret.txt", "w") as handle:
        handle.write("victim-secret")
    with open(os.path.join(shared, "info.tmp"), "w") as handle:
        json.dump({"dir": os.getcwd(), "pid": os.getpid()}, handle)
    os.rename(os.path.join(shared, "info.tmp"), os.path.join(shared, "info.json"))
    wait_for(os.path.join(shared, "done"))
    print(json.dumps({"secret": open("secret.txt").read(), "listing": sorted(os.listdir("."))}))
else:
    wait_for(os.path.join(shared, "info.json"))
    info = json.load(open(os.path.join(shared, "info.json")))
    d, pid = info["dir"], info["pid"]
    out = {"same_pool": os.getppid() == int(open(f"/proc/{pid}/stat").read().split(") ")[1].split()[1])}
    def attempt(name, fn):
        try:
            out[name] = "ok:" + repr(fn())[:60]
        except OSError as exc:
            out[name] = type(exc).__name__
    attempt("read", lambda: open(os.path.join(d, "secret.txt")).read())
    attempt("write", lambda: open(os.path.join(d, "secret.txt"), "w").write("pwned"))
    attempt("create", lambda: open(os.path.join(d, "planted"), "w").write("x"))
    attempt("list", lambda: os.listdir(d))
    attempt("mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1))
    attempt("environ", lambda: open(f"/proc/{pid}/environ", "rb").read())
    attempt("cwd", lambda: os.listdir(f"/proc/{pid}/cwd"))
    libc = ctypes.CDLL(None, use_errno=True)
    def ptrace():
        if libc.ptrace(16, pid, None, None) != 0:
            raise OSError(ctypes.get_errno(), "ptrace")
    attempt("ptrace", ptrace)
    attempt("signal0", lambda: os.kill(pid, 0))
    attempt("sigkill", lambda: os.kill(pid, signal.SIGKILL))
    open(os.path.join(shared, "done"), "w").close()
    print(json.dumps(out))
"""


@pytest.fixture
def meeting_point(shared_dir: str) -> str:
    """A directory both siblings may write (beside the work root, not above it)."""
    path = os.path.join(shared_dir, "meet")
    os.mkdir(path)
    os.chmod(path, 0o777)
    return path


async def test_sibling_files_proc_and_signals_are_out_of_reach(runner_for: Any, meeting_point: str) -> None:
    shared_dir = meeting_point
    tool = runner_for("pool")
    spec = tool.spec(argv=(*PY, SIBLINGS), writable_paths=(shared_dir,))
    results: dict[str, sandbox.Result] = {}

    async def call(role: str) -> None:
        results[role] = await sandbox.run(spec, {"role": role, "shared": shared_dir})

    async with sandbox.open_pools():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "victim")
            nursery.start_soon(call, "attacker")
    victim, attacker = results["victim"], results["attacker"]
    assert victim.status == "ok", victim
    assert attacker.status == "ok", attacker
    assert victim.output == {"secret": "victim-secret", "listing": ["secret.txt"]}
    out = attacker.output
    assert out["same_pool"] is True  # both calls were forked by the same server
    for name in ("read", "write", "create", "list", "mem", "environ", "cwd", "ptrace", "sigkill"):
        assert out[name] in ("PermissionError", "FileNotFoundError"), (name, out)
    assert out["signal0"] == "PermissionError"


KILLERS = r"""
import json, os, signal
out = {}
for name, target in (("server", os.getppid()), ("init", 1), ("everyone", -1)):
    try:
        os.kill(target, signal.SIGKILL)
        out[name] = "sent"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


async def test_server_init_and_everyone_cannot_be_killed(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools() as pools:
        result = await sandbox.run(tool.spec(argv=(*PY, KILLERS)), {})
        assert result.status == "ok", result
        # kill(-1) reports success when it signalled nobody it may not (ESRCH would be
        # "nobody"); what matters is that no one died: the same pool serves on.
        assert result.output["server"] == "PermissionError"
        assert result.output["init"] == "PermissionError"
        (pool,) = pools.pools.values()
        again = await sandbox.run(tool.spec(argv=(*PY, KILLERS)), {})
        assert again.status == "ok" and again.output == result.output
        assert not pool.dead and list(pools.pools.values()) == [pool]


NET = r"""
import json, socket
out = {}
for name, family, kind in (("tcp", socket.AF_INET, socket.SOCK_STREAM), ("udp", socket.AF_INET, socket.SOCK_DGRAM),
                           ("tcp6", socket.AF_INET6, socket.SOCK_STREAM), ("unix", socket.AF_UNIX, socket.SOCK_STREAM)):
    try:
        s = socket.socket(family, kind)
        if family == socket.AF_INET:
            s.bind(("127.0.0.1", 0))
            if kind == socket.SOCK_STREAM:
                s.listen()
            else:
                s.sendto(b"x", s.getsockname())
        out[name] = "ok"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


async def test_no_tcp_or_udp_between_siblings(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools():
        denied = await sandbox.run(tool.spec(argv=(*PY, NET)), {})
        control = await sandbox.run(tool.spec(argv=(*PY, NET), network=True), {})
    assert denied.output == {"tcp": "PermissionError", "udp": "PermissionError",
                             "tcp6": "PermissionError", "unix": "PermissionError"}, denied  # fmt: skip
    assert control.output["udp"] == "ok" and control.output["unix"] == "ok", control


async def test_a_path_holding_the_work_root_is_refused(runner_for: Any, shared_dir: str) -> None:
    # Through it, concurrent calls would reach each other's directories.
    with pytest.raises(sandbox.SpecError, match="holds the pool's work root"):
        await sandbox.run(runner_for("pool").spec(argv=("/bin/true",), readable_paths=(shared_dir,)), {})


async def test_etc_shadow_and_init_environment(runner_for: Any) -> None:
    code = r"""
import json
out = {}
for path in ("/etc/shadow", "/proc/1/environ"):
    try:
        out[path] = open(path, "rb").read().decode("latin-1")
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""
    result = await sandbox.run(runner_for("pool").spec(argv=(*PY, code)), {})
    assert result.output["/etc/shadow"] == "FileNotFoundError", result
    assert result.output["/proc/1/environ"] == "PermissionError", result


async def test_memory_bomb_is_stopped(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools():
        bomb = await sandbox.run(
            tool.spec(argv=(*PY, "x = bytearray(2 << 30)"), memory_bytes=256 * 2**20), {}
        )
        after = await sandbox.run(tool.spec(argv=("/bin/echo", "ok"), memory_bytes=256 * 2**20), {})
    assert bomb.status == "limit_exceeded" and "memory" in bomb.message, bomb
    assert after.status == "ok"


SPIN = "import json, sys\nif json.load(sys.stdin)['spin']:\n    while True: pass\nprint(1)"


async def test_cpu_spin_is_killed_and_the_pool_keeps_serving(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools() as pools:
        spin = await sandbox.run(tool.spec(argv=(*PY, SPIN), cpu_time_s=1, timeout_s=60), {"spin": True})
        (pool,) = pools.pools.values()
        after = await sandbox.run(tool.spec(argv=(*PY, SPIN)), {"spin": False})
        assert not pool.dead and list(pools.pools.values()) == [pool]
    assert spin.status == "limit_exceeded" and "CPU" in spin.message, spin
    assert after.status == "ok"


async def _timed_out_after(tool: Any, argv: tuple[str, ...], sign: Any, **limits: Any) -> sandbox.Result:
    """Run a call meant to end by its timeout (or a limit) with a short timeout, watching
    /proc for `sign()` (what the attack must have got to) during it: a call that ended
    before its sign was seen (a machine too loaded to get that far in time) is run
    again with twice the time, so the outcome is checked only once the attack ran."""
    timeout_s = 1.0
    for _ in range(5):
        seen = trio.Event()

        async def watch(seen: trio.Event = seen) -> None:
            while not sign():  # noqa: ASYNC110 (polling /proc: no event to wait on)
                await trio.sleep(0.01)
            seen.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await sandbox.run(tool.spec(argv=argv, timeout_s=timeout_s, **limits), {})
            if not seen.is_set():
                with trio.move_on_after(0.5):  # a /proc scan that began before the kill
                    await seen.wait()
            nursery.cancel_scope.cancel()
        if seen.is_set():
            return result
        timeout_s *= 2
    pytest.fail(f"{argv[-1][:40]!r} never got going before its call's timeout")


def _named(marker: str) -> str:
    return (
        "import ctypes, os\n"
        f"ctypes.CDLL(None).prctl(15, ctypes.c_char_p({marker!r}.encode()), 0, 0, 0)\n"
    )


async def test_fork_bomb_leaves_nothing(runner_for: Any, token: str) -> None:
    marker = "bomb" + token[:8]
    code = _named(marker) + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    tool = runner_for("pool")
    async with sandbox.open_pools():
        # Seen forking (several processes carry its name) before its timeout struck.
        result = await _timed_out_after(tool, (*PY, code), lambda: len(comm_processes(marker)) > 1, max_processes=32)
        assert result.status in ("timeout", "limit_exceeded"), result
        assert wait_until(lambda: comm_processes(marker) == [])
        after = await sandbox.run(tool.spec(argv=("/bin/echo", "ok")), {})
        assert after.status == "ok"


GRANDCHILD = r"""
import ctypes, json, os, sys, time
libc = ctypes.CDLL(None)
if os.fork() == 0:
    if os.fork() == 0:
        libc.prctl(15, ctypes.c_char_p(sys.argv[1].encode()), 0, 0, 0)
        try:
            os.setsid()
            escaped = "setsid ok"
        except OSError as exc:
            escaped = type(exc).__name__
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        # Written whole, then renamed: the parent reads it as soon as the name exists.
        with open(sys.argv[2] + ".tmp", "w") as handle:
            handle.write(escaped)
        os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
if sys.argv[3] == "hang":
    while True:
        time.sleep(1)
print(json.dumps({"grandchild": open(sys.argv[2]).read()}))
"""


@pytest.mark.parametrize("ending", ["return", "hang"])
async def test_grandchildren_die_on_timeout_and_on_return(
    runner_for: Any, token: str, ending: str
) -> None:
    marker = "gc" + token[:8]
    tool = runner_for("pool")
    async with sandbox.open_pools():
        if ending == "return":
            spec = tool.spec(argv=(*PY, GRANDCHILD, marker, "report", ending), timeout_s=30)
            result = await sandbox.run(spec, {})
            assert wait_until(lambda: comm_processes(marker) == [])
            assert result.status == "ok", result
            assert result.output == {"grandchild": "PermissionError"}
            return
        # Its timeout can be short: the call runs until the grandchild is seen.
        result = await _timed_out_after(tool, (*PY, GRANDCHILD, marker, "report", ending),
                                        lambda: bool(comm_processes(marker)))
        assert result.status == "timeout", result
        assert wait_until(lambda: comm_processes(marker) == [])


FORGE = r"""
import errno, json, os
out = {}
for fd in range(3, 64):
    try:
        os.write(fd, json.dumps({"status": 0, "pid": 1}).encode())
        out[fd] = "written"
    except OSError as exc:
        out[fd] = errno.errorcode[exc.errno]
print(json.dumps(sorted(set(out.values()))))
raise SystemExit(3)
"""


async def test_exec_cannot_forge_a_result_frame(runner_for: Any) -> None:
    result = await sandbox.run(runner_for("pool").spec(argv=(*PY, FORGE)), {})
    assert result.output == ["EBADF"], result
    assert result.exit_code == 3 and result.status == "error", result
