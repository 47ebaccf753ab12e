"""Server CPU per tool call, this checkout against another, side by side under one load.

Run by hand: `python bench/bench_server_vs.py OTHER_CHECKOUT [--calls 500] [--clients 20 --rounds 4]`
(`git worktree add /tmp/main main` or `git archive main | tar -x -C DIR` makes OTHER_CHECKOUT).
Starts ``sconnect serve`` from this checkout and from OTHER_CHECKOUT (a git worktree or an
exported tree of another commit: each server runs that tree's code on a copy of that
tree's shipped configuration), then calls the level-0 ``calculator`` tool on them over
the WebSocket:

- sequential: one client per server, the calls alternating A, B, A, B...: both servers
  see the same machine load at the same moments, which a run after the other does not
  (on a shared machine the load moves by more than most changes save);
- with ``--clients N``: N clients calling at once, rounds alternating between the servers.

Prints, per server: CPU per call of the server process (its threads included, the
sandboxes' processes apart; from /proc), split into the event loop's thread and the
others (audit writer, blocking calls), and the call latency p50/p90 (sequential) or
calls/s (concurrent). Sequential calls also show the client's own CPU per call
(engine.client in this process, its thread's CPU clock around each call): it is on
the latency path too. Quote the CPU: latency on a loaded machine is mostly waiting;
`chrt -f 20 python bench/bench_server_vs.py ...` (root) gives both servers and their
sandboxes the CPU at once, close to an idle machine's latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import jwt
import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.client import open_client  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
HERE = Path(__file__).resolve().parents[1]


class Server:
    """One ``sconnect serve`` of a checkout, on a copy of its configuration."""

    def __init__(self, checkout: Path) -> None:
        self.checkout = checkout
        self.base = Path(tempfile.mkdtemp(prefix="sconnect-bench-vs-", dir="/tmp"))
        os.chmod(self.base, 0o711)
        for name in ("agents.d", "tools.d", "resources.d", "policies"):
            shutil.copytree(checkout / name, self.base / "config" / name)
        env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET, "PYTHONPATH": str(checkout)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(self.base / "config"),
             "--state-dir", str(self.base / "state"), "--limit", "tool_runs=64", "--limit", "tool_runs_per_session=64"],
            cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.close()
            raise SystemExit(f"the server of {checkout} did not start")

    def cpu(self) -> tuple[float, float]:
        """(all threads, the main thread's) CPU seconds so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = main = 0.0
        pid = self.process.pid
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a thread that ended meanwhile
            seconds = (int(fields[11]) + int(fields[12])) / tick
            total += seconds
            main += seconds if int(tid) == pid else 0.0
        return total, main

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 3600}, SECRET, "HS256")


def _report(name: str, calls: int, before: tuple[float, float], after: tuple[float, float], tail: str) -> None:
    total, main = (after[0] - before[0]) / calls * 1000, (after[1] - before[1]) / calls * 1000
    print(f"  {name:<40} CPU {total:5.2f} ms/call (event loop {main:5.2f}, other threads {total - main:5.2f})  {tail}")


async def sequential(servers: list[Server], calls: int) -> None:
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_client(s.url, _token("bench"))) for s in servers]
        for i in range(30):  # warm: pools started, caches filled
            for client in clients:
                await client.call_tool("calculator", {"expression": f"{i}+1"})
        latencies: list[list[float]] = [[] for _ in servers]
        client_cpu = [0.0 for _ in servers]
        before = [s.cpu() for s in servers]
        for i in range(calls):
            for k, client in enumerate(clients):
                started, cpu = time.perf_counter(), time.thread_time()
                await client.call_tool("calculator", {"expression": f"{i}+1"})
                latencies[k].append((time.perf_counter() - started) * 1000)
                client_cpu[k] += time.thread_time() - cpu
        after = [s.cpu() for s in servers]
    print(f"sequential, {calls} calls each, alternating; load average {os.getloadavg()[0]:.2f}")
    for k, server in enumerate(servers):
        ordered = sorted(latencies[k])
        tail = (f"p50 {statistics.median(ordered):6.2f} ms  p90 {ordered[int(len(ordered) * 0.9)]:6.2f} ms  "
                f"client CPU {client_cpu[k] / calls * 1000:5.2f} ms/call")
        _report(str(server.checkout), calls, before[k], after[k], tail)


async def concurrent(servers: list[Server], clients: int, rounds: int, calls: int) -> None:
    results: list[list[tuple[float, tuple[float, float], tuple[float, float]]]] = [[] for _ in servers]
    for _ in range(rounds):
        for k, server in enumerate(servers):

            async def one(i: int, url: str = server.url) -> None:
                async with open_client(url, _token(f"bench{i}")) as client:
                    for j in range(calls):
                        await client.call_tool("calculator", {"expression": f"{j}+1"})

            before, started = server.cpu(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(clients):
                    nursery.start_soon(one, i)
            results[k].append((time.perf_counter() - started, before, server.cpu()))
    print(f"{clients} clients at once, {calls} calls each, {rounds} rounds alternating; load average "
          f"{os.getloadavg()[0]:.2f}")
    for k, server in enumerate(servers):
        n = clients * calls * rounds
        elapsed = sum(r[0] for r in results[k])
        used = (sum(r[2][0] - r[1][0] for r in results[k]), sum(r[2][1] - r[1][1] for r in results[k]))
        _report(str(server.checkout), n, (0.0, 0.0), used, f"{n / elapsed:7.1f} calls/s")


async def main(other: Path, calls: int, clients: int, rounds: int, per_client: int) -> None:
    servers = [Server(HERE)]
    try:
        servers.append(Server(other))
        await sequential(servers, calls)
        if clients:
            await concurrent(servers, clients, rounds, per_client)
    finally:
        for server in servers:
            server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a worktree, or an exported tree)")
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per server")
    parser.add_argument("--clients", type=int, default=0, help="also N clients at once (0: not)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of the concurrent part")
    parser.add_argument("--per-client", type=int, default=30, help="calls per client and round, concurrent part")
    args = parser.parse_args()
    trio.run(main, args.other.resolve(), args.calls, args.clients, args.rounds, args.per_client)
