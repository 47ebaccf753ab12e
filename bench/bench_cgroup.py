"""What a per-call memory cgroup costs (issue 11, item 7): one call of `/bin/true` on
the namespaces and process backends, and on the warm pool one call of `/bin/true` and
one of the shipped calculator function (`sconnect_tools.calc:evaluate`), with the
call's cgroup (when the host gives one) and without it, interleaved; prints median and
p90 wall-clock ms per call. The pools are started and warmed before timing.

For the pool's calculator it also prints the engine's CPU per call (this process, every
thread: the event loop and the thread that admits workers to their cgroups; from
getrusage) with and without, in alternating blocks of 50 sequential calls (a worker is
admitted after the call that took its predecessor: blocks keep that work with its own
variant).

    python bench/bench_cgroup.py [--calls 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sandbox  # noqa: E402
from sandbox import _cgroup, _pool  # noqa: E402


async def _one(spec: sandbox.Spec, arguments: Any = None) -> float:
    begun = time.perf_counter()
    result = await sandbox.run(spec, arguments if arguments is not None else {})
    if result.status != "ok":
        raise SystemExit(f"call failed: {result.message}")
    return (time.perf_counter() - begun) * 1000


async def main(calls: int) -> None:
    found = _cgroup.probe()
    print(found.describe())
    if found.controller is None:
        print("no memory cgroup on this host: nothing to compare")
        return
    off = _cgroup.Probe(None, "switched off for the comparison")
    root = tempfile.mkdtemp(prefix="sconnect-bench-")
    os.chmod(root, 0o755)
    # RLIMIT_NPROC counts every process of the sandbox uid on the host (other services'
    # sandboxes too): a generous one keeps a busy host from failing the run.
    common: dict[str, Any] = {"work_root": root, "max_processes": 1024}
    cases: list[tuple[str, sandbox.Spec, Any]] = [
        (name, sandbox.Spec(argv=("/bin/true",), isolation=name, **common), None)
        for name in ("namespaces", "process")
    ]
    if sandbox.detect().pool_problem() is None:
        cases.append(("pool true", sandbox.Spec(argv=("/bin/true",), isolation="pool", **common), None))
        calc = sandbox.Spec(
            python="sconnect_tools.calc:evaluate", python_packages=(str(REPO / "sconnect_tools"),),
            isolation="pool", memory_bytes=256 * 2**20, **common,
        )  # fmt: skip
        cases.append(("pool calc", calc, {"expression": "6*7"}))
    else:
        print(f"no pool here: {sandbox.detect().pool_problem()}")
    # A pool decides when it starts whether its workers get cgroups: the pool cases run
    # in two pool sets, one started with the probe switched off, alternating between them.
    async with sandbox.open_pools() as with_cgroup, sandbox.open_pools() as without_cgroup:
        sets = {"with cgroup": with_cgroup, "without": without_cgroup}
        for name, spec, arguments in cases:
            timings: dict[str, list[float]] = {"with cgroup": [], "without": []}
            for label, probe in (("with cgroup", found), ("without", off)):
                _cgroup.probe = lambda probe=probe: probe  # type: ignore[misc]
                with _using(sets[label]):
                    await _one(spec, arguments)  # starts and warms a pool
            for _ in range(calls):
                for label, probe in (("with cgroup", found), ("without", off)):
                    _cgroup.probe = lambda probe=probe: probe  # type: ignore[misc]
                    with _using(sets[label]):
                        timings[label].append(await _one(spec, arguments))
            for label, values in timings.items():
                values.sort()
                p90 = values[int(len(values) * 0.9)]
                print(f"{name:<11} {label:<12} median {statistics.median(values):6.2f} ms  p90 {p90:6.2f} ms")
            if name == "pool calc":
                await _engine_cpu(spec, arguments, calls, sets, {"with cgroup": found, "without": off})
    print(f"load average {os.getloadavg()[0]:.2f}")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _engine_cpu(
    spec: sandbox.Spec, arguments: Any, calls: int, sets: dict[str, sandbox.PoolSet], probes: dict[str, _cgroup.Probe]
) -> None:
    block = 50
    spent = dict.fromkeys(sets, 0.0)
    for _ in range(max(1, calls // block)):
        for label, pools in sets.items():
            _cgroup.probe = lambda probe=probes[label]: probe  # type: ignore[misc]
            with _using(pools):
                began = _cpu()
                for _ in range(block):
                    await _one(spec, arguments)
                spent[label] += _cpu() - began
    rounds = max(1, calls // block) * block
    print(
        "pool calc   engine CPU per call: "
        + ", ".join(f"{label} {spent[label] * 1000 / rounds:.3f} ms" for label in sets)
    )


@contextlib.contextmanager
def _using(pools: sandbox.PoolSet) -> Iterator[None]:
    """Run the body's pool calls in `pools` (the set `open_pools` would have made current)."""
    token = _pool._current.set(pools)
    try:
        yield
    finally:
        _pool._current.reset(token)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    trio.run(main, parser.parse_args().calls)
