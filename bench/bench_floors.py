"""What this machine's kernel charges for the parts of an isolated call no code of ours can skip.

Run by hand: `python bench/bench_floors.py [--calls 300] [--dir DIR]`. Nothing of the
service runs: each figure is the bare mechanism, in a plain Python process, so that the
service's own figures (`bench_pool.py`, `bench_sandbox.py`, `compare_mcp.py`) can be read
against what is left once every line of ours is gone:

- a pre-forked call: a child forked ahead of time from a process the size of the pool's
  fork server (json, traceback and the shipped calculator imported, ``gc.freeze()``)
  blocks on a pipe; timed from writing its arguments to reading its result (``result``)
  and to having reaped it (``reaped``): the fresh process per call that issue 14 asks for,
  with no sandbox, cgroup, Landlock or seccomp around it;
- an exec: ``os.posix_spawn`` of /bin/true and its reap;
- a durable commit: 16 KiB written and ``fdatasync``'d in DIR (default: the temporary
  directory; point it at the audit log's file system): one audit commit's floor;
- a loopback round trip: one byte to an echo process over TCP on 127.0.0.1 and back;
- a memory cgroup (root with a memory controller only): make one with its limit, move a
  process in, remove it.

The last line adds up the floor of one sequential isolated call: a round trip for the
request and its answer, the pre-forked call reaped, and the commit of its execution
record (the decision's commit overlaps the sandbox start).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sconnect_tools.calc  # noqa: E402,F401  # the fork server preloads the tool's module
from sandbox import _cgroup  # noqa: E402

assert traceback  # preloaded like the fork server does: a failing call needs no import


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(values) * 1e3:6.3f} ms  p90 {p90 * 1e3:6.3f} ms"


def _anon_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _child_call(request: int, result: int) -> None:
    """In the pre-forked child: wait for arguments, answer, end (never returns)."""
    data = b""
    while chunk := os.read(request, 65536):
        data += chunk
    answer = json.dumps({"value": len(json.loads(data))}).encode()
    os.write(result, answer)
    os.close(result)
    os._exit(0)


def prefork_call() -> tuple[float, float]:
    """One call in a child forked (and ready) before the clock starts."""
    request_r, request_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(request_w)
        os.close(result_r)
        _child_call(request_r, result_w)
    os.close(request_r)
    os.close(result_w)
    pidfd = os.pidfd_open(pid)
    # The child is ready once it blocks on its pipe: its fork's own faults are done.
    _wait_blocked(pid)
    started = time.perf_counter()
    os.write(request_w, b'{"expression": "1+2"}')
    os.close(request_w)
    while os.read(result_r, 65536):
        pass
    answered = time.perf_counter()
    os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    reaped = time.perf_counter()
    os.close(result_r)
    os.close(pidfd)
    return answered - started, reaped - started


def _wait_blocked(pid: int) -> None:
    """Until the child sleeps (state S) in its read: bounded, it needs microseconds."""
    for _ in range(100_000):
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"S":
            return
    raise RuntimeError(f"child {pid} never blocked on its pipe")


def spawn_true() -> float:
    started = time.perf_counter()
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    return time.perf_counter() - started


def durable_commit(fd: int, block: bytes) -> float:
    started = time.perf_counter()
    os.pwrite(fd, block, 0)
    os.fdatasync(fd)
    return time.perf_counter() - started


def loopback_round_trips(calls: int) -> list[float]:
    listener = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:
        peer, _ = listener.accept()
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while byte := peer.recv(1):
            peer.sendall(byte)
        os._exit(0)
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.sendall(b"x")
        client.recv(1)
        times.append(time.perf_counter() - started)
    client.close()
    listener.close()
    os.waitpid(pid, 0)
    return times


def cgroup_cycle(controller: _cgroup.Controller) -> tuple[float, float]:
    """Make a limited cgroup and move a sleeping child in; then remove it once the child
    is gone. Returns (make + move, remove)."""
    pid = os.fork()
    if pid == 0:
        os.read(os.open("/dev/null", os.O_RDONLY), 1)  # EOF at once; wait for the kill
        time.sleep(60)
        os._exit(0)
    started = time.perf_counter()
    cgroup = _cgroup.make(controller, 256 << 20)
    cgroup.add(pid)
    made = time.perf_counter() - started
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    started = time.perf_counter()
    os.rmdir(cgroup.path)
    return made, time.perf_counter() - started


def _repeat(calls: int, step: Callable[[], object]) -> list:
    return [step() for _ in range(calls)]


def main(calls: int, directory: str) -> None:
    gc.collect()
    gc.freeze()
    print(f"forking process: {_anon_kib()} KiB anonymous memory; load average {os.getloadavg()[0]:.2f}")
    pairs = _repeat(calls, prefork_call)
    answered, reaped = [p[0] for p in pairs], [p[1] for p in pairs]
    print(f"pre-forked call, result read   {_ms(answered)}")
    print(f"pre-forked call, child reaped  {_ms(reaped)}")
    print(f"posix_spawn /bin/true + reap   {_ms(_repeat(calls, spawn_true))}")
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        block = os.urandom(16384)
        commits = _repeat(calls, lambda: durable_commit(handle.fileno(), block))
    print(f"16 KiB write + fdatasync       {_ms(commits)}  ({directory})")
    trips = loopback_round_trips(calls)
    print(f"loopback TCP round trip        {_ms(trips)}")
    probe = _cgroup.probe()
    controller = probe.controller
    if controller is None:
        print(f"memory cgroup                  not measured: {probe.describe()}")
    else:
        cycles = _repeat(min(calls, 200), lambda: cgroup_cycle(controller))
        print(f"memory cgroup make + move in   {_ms([c[0] for c in cycles])}")
        print(f"memory cgroup remove           {_ms([c[1] for c in cycles])}")
    floor = statistics.median(trips) + statistics.median(reaped) + statistics.median(commits)
    print(f"floor of one sequential isolated call (round trip + pre-forked call reaped + commit): {floor * 1e3:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the durable commits go")
    args = parser.parse_args()
    main(args.calls, args.dir)
