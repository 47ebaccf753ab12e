"""The pre-forked calls of `bench_floors.py`, from an interpreter like the pool's fork server.

Run by `bench_floors.py` as ``/usr/bin/python3 -S -I bench/_prefork.py REPO CALLS`` (the
fork server's interpreter and flags): imports the standard library's json and the
shipped calculator's module, freezes its heap, then times CALLS calls, each in a child
forked and blocked on its pipe before the clock starts: from writing its arguments to
reading its result, and to having reaped it. Then the CPU of CALLS more such calls, made
back to back (fork, call, reap; nothing timed in between): this process's and its reaped
children's user + system time, per call. Prints them as one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time


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


def _fork_ready() -> tuple[int, int, int]:
    """A child blocked (or about to block) on its request pipe: (pid, request, result)."""
    request_r, request_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(request_w)
        os.close(result_r)
        _child_call(request_r, result_w)
    os.close(request_r)
    os.close(result_w)
    return pid, request_w, result_r


def _answer(request_w: int, result_r: int) -> None:
    os.write(request_w, b'{"expression": "1+2"}')
    os.close(request_w)
    while os.read(result_r, 65536):
        pass


def prefork_call() -> tuple[float, float]:
    """One call in a child forked (and ready) before the clock starts."""
    pid, request_w, result_r = _fork_ready()
    pidfd = os.pidfd_open(pid)
    # The child is ready once it blocks on its pipe: its fork's own faults are done.
    _wait_blocked(pid)
    started = time.perf_counter()
    _answer(request_w, result_r)
    answered = time.perf_counter()
    os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    reaped = time.perf_counter()
    os.close(result_r)
    os.close(pidfd)
    return answered - started, reaped - started


def cpu_per_call(calls: int) -> float:
    """CPU seconds per call of forking, calling and reaping, this process and its children."""
    before = _cpu_s()
    for _ in range(calls):
        pid, request_w, result_r = _fork_ready()
        _answer(request_w, result_r)
        os.waitpid(pid, 0)
        os.close(result_r)
    return (_cpu_s() - before) / calls


def _cpu_s() -> float:
    """User + system seconds of this process and its reaped children (microseconds' resolution)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _wait_blocked(pid: int) -> None:
    """Until the child sleeps (state S) in its read: bounded, it needs microseconds."""
    for _ in range(100_000):
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"S":
            return
    raise RuntimeError(f"child {pid} never blocked on its pipe")


def main(calls: int) -> None:
    import sconnect_tools.calc  # noqa: F401  # the fork server preloads the tool's module

    gc.collect()
    gc.freeze()
    pairs = [prefork_call() for _ in range(calls)]
    cpu = cpu_per_call(calls)
    print(json.dumps({"anon_kib": _anon_kib(), "answered": [p[0] for p in pairs], "reaped": [p[1] for p in pairs],
                      "cpu_s": cpu}))


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    main(int(sys.argv[2]))
