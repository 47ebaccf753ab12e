"""What a per-call memory cgroup costs (issue 11, item 7): one call of `/bin/true` on
the namespaces and process backends, with the call's cgroup (when the host gives one)
and without it, interleaved; prints median and p90 wall-clock ms per call.

    python bench/bench_cgroup.py [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import trio

import sandbox
from sandbox import _cgroup


async def _one(spec: sandbox.Spec) -> float:
    begun = time.perf_counter()
    result = await sandbox.run(spec, {})
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
    for backend in ("namespaces", "process"):
        spec = sandbox.Spec(argv=("/bin/true",), isolation=backend, work_root=root)
        timings: dict[str, list[float]] = {"with cgroup": [], "without": []}
        for _ in range(calls):
            for label, probe in (("with cgroup", found), ("without", off)):
                _cgroup.probe = lambda probe=probe: probe  # type: ignore[misc]
                timings[label].append(await _one(spec))
        for label, values in timings.items():
            values.sort()
            p90 = values[int(len(values) * 0.9)]
            print(f"{backend:<11} {label:<12} median {statistics.median(values):6.2f} ms  p90 {p90:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    trio.run(main, parser.parse_args().calls)
