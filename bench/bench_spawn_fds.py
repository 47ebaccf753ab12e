"""The cost of spawning a launcher while the engine holds many descriptors.

Run by hand: `python bench/bench_spawn_fds.py [--spawns 200] [--fds 100,1000,10000]`.
For each count of open descriptors (sockets, as open connections would be), spawns
`/bin/true` through `sandbox._process.spawn` the two ways it can: with glibc's
close-from file action (what runs where glibc >= 2.34) and the fallback that lists
/proc/self/fd and closes each inheritable descriptor (what ran on every spawn before).
Prints the median and p99 of the time spent in `spawn()` itself - the part that runs
on the event loop - and of the whole spawn-and-reap.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox import _process  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _measure(spawns: int) -> tuple[list[float], list[float]]:
    in_spawn, whole = [], []
    for _ in range(spawns):
        began = time.perf_counter()
        child = _process.spawn("/bin/true", ["/bin/true"], {}, fds={})
        spawned = time.perf_counter()
        os.waitpid(child.pid, 0)
        whole.append(time.perf_counter() - began)
        in_spawn.append(spawned - began)
        for fd in (child.pidfd, child.stdin, child.stdout, child.stderr):
            os.close(fd)
    return in_spawn, whole


def main(spawns: int, counts: list[int]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(counts) * 2 + 256), hard))
    native = _process._native()
    print(f"spawn of /bin/true, {spawns} per row; close-from available: {native is not None}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'descriptors':>11} {'way':<28} {'spawn() p50':>12} {'p99':>8} {'spawn+reap p50':>15}")
    held: list[Any] = []
    for count in counts:
        while len(held) < count:
            held.extend(socket.socketpair())
        ways: list[tuple[str, Any]] = [("scan of /proc/self/fd", None)]
        if native is not None:
            ways.insert(0, ("close-from (close_range)", native))
        for name, way in ways:
            if way is None:
                _process._native = lambda: None  # type: ignore[assignment]  # force the fallback
            try:
                in_spawn, whole = _measure(spawns)
            finally:
                _process._native = _original
            print(f"{len(held):>11} {name:<28} {_percentile(in_spawn, 0.5) * 1e3:>10.3f}ms "
                  f"{_percentile(in_spawn, 0.99) * 1e3:>6.3f}ms {_percentile(whole, 0.5) * 1e3:>13.3f}ms")
    for sock in held:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


_original = _process._native

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--fds", default="100,1000,10000", help="comma-separated descriptor counts")
    args = parser.parse_args()
    main(args.spawns, [int(n) for n in args.fds.split(",")])
