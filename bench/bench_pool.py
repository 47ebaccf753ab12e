"""A level-0 Python tool call (`calculator`) through the pool backend vs the namespaces backend.

Run by hand: `python bench/bench_pool.py [--calls 300] [--concurrency 20]`.

The sandbox part only (no WebSocket, policy or audit): `sandbox.run` of the shipped
`sconnect_tools.calc:evaluate`, sequentially and from --concurrency tasks at once, in
one run, alternating backends. Prints p50/p99 of one call and calls per second. The
pool is started (and warmed with one call) before timing; its start-up is printed apart.

When `mcp` is installed, the same run also measures the MCP SDK's own server with its
tool in-process and unisolated (`bench_mcp.py`'s SDK server, over Streamable HTTP, the
SDK's client): a whole protocol round trip, so not like for like with the sandbox
part alone, but the reference issue 14 sets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sandbox  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _spec(isolation: str, work_root: str) -> sandbox.Spec:
    return sandbox.Spec(
        python="sconnect_tools.calc:evaluate",
        python_packages=(str(REPO / "sconnect_tools"),),
        isolation=isolation,  # type: ignore[arg-type]
        work_root=work_root,
        timeout_s=5,
        memory_bytes=256 * 2**20,
    )


async def _sequential(spec: sandbox.Spec, calls: int) -> tuple[list[float], float]:
    times = []
    began = time.perf_counter()
    for i in range(calls):
        start = time.perf_counter()
        result = await sandbox.run(spec, {"expression": f"{i}*7"})
        times.append(time.perf_counter() - start)
        assert result.status == "ok", result
    return times, calls / (time.perf_counter() - began)


async def _concurrent(spec: sandbox.Spec, calls: int, concurrency: int) -> tuple[list[float], float]:
    times: list[float] = []
    todo = iter(range(calls))

    async def client() -> None:
        for i in todo:
            start = time.perf_counter()
            result = await sandbox.run(spec, {"expression": f"{i}*7"})
            times.append(time.perf_counter() - start)
            assert result.status == "ok", result

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(client)
    return times, calls / (time.perf_counter() - began)


def _cpu_of(pid: int) -> float:
    """CPU time of a live process (all its threads), in seconds: from schedstat, in
    nanoseconds (/proc/PID/stat counts clock ticks, 10 ms each: too coarse here)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
            total += int(handle.read().split()[0])
    return total / 1e9


def _pool_processes(pools: sandbox.PoolSet) -> list[int]:
    """bubblewrap, the sandbox's init and the fork server of every pool (host pids)."""
    found = []
    for pool in pools.pools.values():
        if pool.child is None or pool.pid1 is None:
            continue
        found += [pool.child.pid, pool.pid1]
        with open(f"/proc/{pool.pid1}/task/{pool.pid1}/children") as handle:
            found += [int(pid) for pid in handle.read().split()]
    return found


async def _cpu_per_call(pools: sandbox.PoolSet, spec: sandbox.Spec, calls: int) -> str:
    """CPU ms per sequential call: the engine, the fork server (+ bwrap), the workers."""
    import resource

    def engine() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def event_loop() -> float:  # the engine's main thread alone (its admitter thread aside)
        with open(f"/proc/self/task/{os.getpid()}/schedstat") as handle:
            return int(handle.read().split()[0]) / 1e9

    processes = _pool_processes(pools)
    server_before = sum(_cpu_of(pid) for pid in processes)
    engine_before, loop_before = engine(), event_loop()
    workers = 0.0
    for i in range(calls):
        result = await sandbox.run(spec, {"expression": f"{i}*7"})
        workers += result.cpu_time_s
    engine_ms = (engine() - engine_before) * 1000 / calls
    loop_ms = (event_loop() - loop_before) * 1000 / calls
    server_ms = (sum(_cpu_of(pid) for pid in processes) - server_before) * 1000 / calls
    workers_ms = workers * 1000 / calls
    total = engine_ms + server_ms + workers_ms
    return (
        f"pool CPU per call ({calls} sequential): engine {engine_ms:.2f} ms (event loop {loop_ms:.2f}), "
        f"fork server + bwrap {server_ms:.2f} ms, worker {workers_ms:.2f} ms, total {total:.2f} ms"
    )


def _line(name: str, times: list[float], rate: float) -> str:
    return (
        f"{name:<28} p50 {_percentile(times, 0.5) * 1000:7.2f} ms  "
        f"p99 {_percentile(times, 0.99) * 1000:7.2f} ms  {rate:7.1f} calls/s"
    )


async def _sdk(calls: int, concurrency: int) -> None:
    """The MCP SDK's unisolated server, measured with bench_mcp's own client loop."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        print("mcp is not installed: no SDK comparison")
        return
    import subprocess

    import bench_mcp  # type: ignore[import-not-found]  # this directory's sibling

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process, url, _ = bench_mcp._start([sys.executable, bench_mcp.__file__, "--serve-sdk"], env, "http://")
    try:
        url = "http://" + url
        await bench_mcp._measure(url, None, "legacy", "calculator", 10, 1)  # warm-up
        found = await bench_mcp._measure(url, None, "legacy", "calculator", calls, concurrency)
        for variant, (p50, p99, rate) in found.items():
            print(f"{'MCP SDK ' + variant:<28} p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  {rate:7.1f} calls/s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def main(calls: int, concurrency: int) -> None:
    root = tempfile.mkdtemp(prefix="bench-pool-")
    os.chmod(root, 0o711)
    print(sandbox.detect().summary)
    async with sandbox.open_pools() as pools:
        pool, ns = _spec("pool", root), _spec("namespaces", root)
        start = time.perf_counter()
        await sandbox.run(pool, {"expression": "1"})
        print(f"pool start-up + first call: {(time.perf_counter() - start) * 1000:.1f} ms")
        ns_calls = max(20, calls // 5)  # ~60 ms a call: fewer keep the run short
        for label, spec, n in (("pool", pool, calls), ("namespaces", ns, ns_calls)):
            times, rate = await _sequential(spec, n)
            print(_line(f"{label} sequential ({n})", times, rate))
        for label, spec, n in (("pool", pool, calls), ("namespaces", ns, ns_calls)):
            times, rate = await _concurrent(spec, n, concurrency)
            print(_line(f"{label} {concurrency} concurrent ({n})", times, rate))
        print(await _cpu_per_call(pools, pool, calls))
    await _sdk(calls, concurrency)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    trio.run(main, args.calls, args.concurrency)
