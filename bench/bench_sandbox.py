"""Per-call overhead of each sandbox backend against a bare spawn of the same command.

Run by hand: `python bench/bench_sandbox.py [--calls 300] [--backends pool,...]`. For each workload (/bin/true,
and a Python function run with /usr/bin/python3 -S -I), prints median and p99 wall time
per call of: a bare `trio.run_process` of the command, `sandbox.run` with the process
backend, with the namespaces backend and with the warm pool (each when usable; the pool
started and warmed before timing), plus the overhead over bare, and the mean CPU time
each backend reports for its tool process (for the pool: the worker's whole life, its
set-up ahead of the call included, and for an exec the program's). Calls are sequential
(one client, back to back) and interleaved across variants. The load average is printed
before and after: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sandbox  # noqa: E402

PYTHON = "/usr/bin/python3"
FUNCTION_CODE = "import json, sys; print(json.dumps(len(json.load(sys.stdin))))"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def main(calls: int, only: list[str]) -> None:
    caps = sandbox.detect()
    print(caps.summary)
    root = tempfile.mkdtemp(prefix="sconnect-bench-")
    os.chmod(root, 0o755)
    package = os.path.join(root, "pkgs", "benchtool")
    os.makedirs(package)
    os.chmod(os.path.dirname(package), 0o755)
    with open(os.path.join(package, "__init__.py"), "w") as handle:
        handle.write("def count(**kwargs):\n    return len(kwargs)\n")
    os.chmod(os.path.join(package, "__init__.py"), 0o644)
    os.chmod(package, 0o755)
    work_root = os.path.join(root, "work")

    workloads: dict[str, tuple[list[str], dict[str, Any]]] = {
        "/bin/true": (
            ["/bin/true"],
            dict(argv=("/bin/true",)),
        ),
        "python -S -I function": (
            [PYTHON, "-S", "-I", "-c", FUNCTION_CODE],
            dict(python="benchtool:count", python_packages=(package,)),
        ),
    }
    backends = ["process"] + (["namespaces"] if caps.default_backend == "namespaces" else [])
    backends += ["pool"] if caps.pool_problem() is None else []
    backends = [b for b in backends if not only or b in only]
    print(f"{calls} calls per variant, sequential, interleaved; load average {_load()}\n")
    print(f"{'workload':24} {'variant':12} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'cpu ms':>8}")
    async with sandbox.open_pools():
        await _measure(workloads, backends, work_root, caps, calls)
    print(f"\nload average {_load()}")
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def _measure(
    workloads: dict[str, tuple[list[str], dict[str, Any]]], backends: list[str], work_root: str,
    caps: sandbox.Capabilities, calls: int,
) -> None:  # fmt: skip
    arguments = {"a": 1, "b": 2}
    payload = b'{"a": 1, "b": 2}'
    for name, (bare_argv, spec_kwargs) in workloads.items():
        samples: dict[str, list[float]] = {"bare": [], **{b: [] for b in backends}}
        cpu: dict[str, list[float]] = {b: [] for b in backends}
        specs = {
            b: sandbox.Spec(isolation=b, work_root=work_root, **spec_kwargs)  # type: ignore[arg-type]
            for b in backends
        }
        handlers = {b: sandbox.backend_for(specs[b], caps) for b in backends}
        for i in range(calls + 10):
            start = time.perf_counter()
            await trio.run_process(bare_argv, stdin=payload, capture_stdout=True, env={})
            bare = time.perf_counter() - start
            if i >= 10:
                samples["bare"].append(bare)
            for b in backends:
                start = time.perf_counter()
                result = await sandbox.run(specs[b], arguments, backend=handlers[b])
                elapsed = time.perf_counter() - start
                if result.status != "ok":
                    raise SystemExit(f"{b} {name}: {result}")
                if i >= 10:
                    samples[b].append(elapsed)
                    cpu[b].append(result.cpu_time_s)
        base50 = statistics.median(samples["bare"])
        base99 = _percentile(samples["bare"], 0.99)
        for variant, values in samples.items():
            p50, p99 = statistics.median(values), _percentile(values, 0.99)
            extra = ""
            if variant != "bare":
                mean_cpu = statistics.fmean(cpu[variant])
                extra = f"{(p50 - base50) * 1e3:8.2f} {(p99 - base99) * 1e3:8.2f} {mean_cpu * 1e3:8.2f}"
            print(f"{name:24} {variant:12} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--backends", default="", help="comma-separated: process, namespaces, pool (default: all)")
    args = parser.parse_args()
    trio.run(main, args.calls, [name for name in args.backends.split(",") if name])
