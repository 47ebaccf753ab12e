"""A level-0 Python tool call (`calculator`) through the pool backend vs the namespaces backend.

Run by hand: `python bench/bench_pool.py [--calls 300] [--concurrency 20]`, or, to compare
this tree's sandbox with another checkout's (before/after), `python bench/bench_pool.py
--vs /path/to/other/checkout [--tool calc|count|true] [--rounds 30] [--block 20] [--gap 0.005]`.

The sandbox part only (no WebSocket, policy or audit): `sandbox.run` of the shipped
`sconnect_tools.calc:evaluate`, sequentially and from --concurrency tasks at once, in
one run, alternating backends. Prints p50/p99 of one call and calls per second. The
pool is started (and warmed with one call) before timing; its start-up is printed apart.

When `mcp` is installed, the same run also measures the MCP SDK's own server with its
tool in-process and unisolated (`bench_mcp.py`'s SDK server, over Streamable HTTP, the
SDK's client): a whole protocol round trip, so not like for like with the sandbox
part alone, but the reference issue 14 sets.

--vs: two child processes, one importing `sandbox` from this checkout (A), one from the
other (B), each with its warm pool of the same tool (the shipped calculator, a function
returning ``len(kwargs)`` as in bench_sandbox.py, or /bin/true). The parent has them run
blocks of sequential calls in turn, A B A B ..., --gap seconds apart (0: back to back);
while one runs the other is idle. Prints for each p50/p90 wall ms per call and the CPU
per call of the engine (its event loop apart), the fork server and the worker, and the
load average before and after. Run it under ``chrt -f 20`` to keep other processes off
the timings (children inherit the policy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
# --serve --repo TREE: the sandbox of that checkout (the --vs comparison's other side)
_REPO_ARG = sys.argv.index("--repo") + 1 if "--repo" in sys.argv else 0
sys.path.insert(0, sys.argv[_REPO_ARG] if _REPO_ARG else str(REPO))

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


def _faults_of(pids: list[int]) -> tuple[int, int]:
    """Minor page faults of these processes and of their reaped children (the fork
    server reaps its workers: theirs land in its cminflt)."""
    own = children = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
        own += int(fields[7])  # minflt (field 10 of the line)
        children += int(fields[8])  # cminflt
    return own, children


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


_COUNT_TOOL = "def count(**kwargs):\n    return len(kwargs)\n"


def _tool_spec(tool: str, repo: str, root: str) -> tuple[sandbox.Spec, dict[str, object]]:
    """The Spec of a --vs tool and the arguments of its calls."""
    if tool == "calc":
        spec = sandbox.Spec(
            python="sconnect_tools.calc:evaluate", python_packages=(os.path.join(repo, "sconnect_tools"),),
            isolation="pool", work_root=root, timeout_s=5, memory_bytes=256 * 2**20,
        )  # fmt: skip
        return spec, {"expression": "6*7"}
    if tool == "count":
        package = os.path.join(root, "pkgs", "benchtool")
        os.makedirs(package)
        with open(os.path.join(package, "__init__.py"), "w") as handle:
            handle.write(_COUNT_TOOL)
        for path in (os.path.dirname(package), package):
            os.chmod(path, 0o755)
        os.chmod(os.path.join(package, "__init__.py"), 0o644)
        return sandbox.Spec(python="benchtool:count", python_packages=(package,), isolation="pool", work_root=root), {
            "a": 1, "b": 2,
        }  # fmt: skip
    return sandbox.Spec(argv=("/bin/true",), isolation="pool", work_root=root), {}


async def _serve_blocks(tool: str, repo: str) -> None:
    """--serve: run blocks of calls as the parent asks (a line "CALLS GAP" on stdin), answer
    each with one JSON line: the wall seconds of each call and the CPU seconds spent."""
    import json
    import resource

    root = tempfile.mkdtemp(prefix="bench-pool-vs-")
    os.chmod(root, 0o711)
    spec, arguments = _tool_spec(tool, repo, root)
    backend = sandbox.backend_for(spec)
    loop_file = f"/proc/self/task/{os.getpid()}/schedstat"

    def loop_cpu() -> float:
        with open(loop_file) as handle:
            return int(handle.read().split()[0]) / 1e9

    async with sandbox.open_pools() as pools:
        for _ in range(20):  # starts and warms the pool
            await sandbox.run(spec, arguments, backend=backend)
        processes = _pool_processes(pools)
        servers = processes[2:]  # the fork servers: the workers are their children
        print("ready", flush=True)
        while line := await trio.to_thread.run_sync(sys.stdin.readline):
            calls, gap = int(line.split()[0]), float(line.split()[1])
            usage, loop, server = resource.getrusage(resource.RUSAGE_SELF), loop_cpu(), 0.0
            server = sum(_cpu_of(pid) for pid in processes)
            faults = _faults_of(servers)
            times, workers = [], 0.0
            for _ in range(calls):
                if gap:
                    await trio.sleep(gap)
                start = time.perf_counter()
                result = await sandbox.run(spec, arguments, backend=backend)
                times.append(time.perf_counter() - start)
                if result.status != "ok":
                    raise SystemExit(f"call failed: {result}")
                workers += result.cpu_time_s
            # the refill of the block's last call belongs to the block
            await trio.sleep(0.02)
            after = resource.getrusage(resource.RUSAGE_SELF)
            faults_after = _faults_of(servers)
            engine = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
            report = {
                "times": times, "engine": engine, "loop": loop_cpu() - loop,
                "server": sum(_cpu_of(pid) for pid in processes) - server, "workers": workers,
                "server_faults": faults_after[0] - faults[0], "worker_faults": faults_after[1] - faults[1],
            }  # fmt: skip
            print(json.dumps(report), flush=True)
    shutil.rmtree(root, ignore_errors=True)


def _vs(other: str, tool: str, rounds: int, block: int, gap: float) -> None:
    """Alternate blocks of calls between this checkout's sandbox (A) and `other`'s (B)."""
    import json
    import subprocess

    trees = {"A": str(REPO), "B": os.path.abspath(other)}
    children = {}
    for label, tree in trees.items():
        command = [sys.executable, os.path.abspath(__file__), "--serve", "--repo", tree, "--tool", tool]
        children[label] = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": tree}
        )
    print(f"tool {tool}; {rounds} rounds of {block} sequential calls each, gap {gap * 1000:g} ms; "
          f"A = {trees['A']}, B = {trees['B']}; load average {_load()}")  # fmt: skip
    found: dict[str, dict[str, list[float]]] = {label: {"times": []} for label in trees}
    keys = ("engine", "loop", "server", "workers", "server_faults", "worker_faults")
    spent = {label: dict.fromkeys(keys, 0.0) for label in trees}
    try:
        for label, child in children.items():
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"{label}: the bench child did not start")
        for index in range(rounds):
            order = ("A", "B") if index % 2 == 0 else ("B", "A")
            for label in order:
                child = children[label]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"{block} {gap}\n")
                child.stdin.flush()
                report = json.loads(child.stdout.readline())
                found[label]["times"] += report["times"]
                for key in spent[label]:
                    spent[label][key] += report[key]
    finally:
        for child in children.values():
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=60)
    calls = rounds * block
    for label in trees:
        times = found[label]["times"]
        cpu = {key: value * 1000 / calls for key, value in spent[label].items()}
        print(
            f"{label}: p50 {_percentile(times, 0.5) * 1000:6.3f} ms  p90 {_percentile(times, 0.9) * 1000:6.3f} ms  "
            f"CPU/call: engine {cpu['engine']:.3f} (loop {cpu['loop']:.3f}), fork server + bwrap "
            f"{cpu['server']:.3f}, worker {cpu['workers']:.3f}, total "
            f"{cpu['engine'] + cpu['server'] + cpu['workers']:.3f} ms; page faults/call: fork server "
            f"{spent[label]['server_faults'] / calls:.0f}, worker {spent[label]['worker_faults'] / calls:.0f}"
        )
    print(f"load average {_load()}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--vs", help="another checkout to compare with (blocks of calls alternating)")
    parser.add_argument("--tool", choices=("calc", "count", "true"), default="calc")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.005, help="seconds between calls (0: back to back)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", default=str(REPO), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve_blocks, args.tool, args.repo)
    elif args.vs:
        _vs(args.vs, args.tool, args.rounds, args.block, args.gap)
    else:
        trio.run(main, args.calls, args.concurrency)
