"""Latency of the server's paths, from a real client over loopback.

Starts ``sconnect serve`` on the shipped configuration as a separate process
(so client and server do not share a core's event loop), then measures, one
request at a time: the protocol round trip (``tool_list``), an agent turn that
needs no tool ("hello"), a direct ``tool_call`` of a level-0 tool (the sandbox
included), and an agent turn that calls it.  Prints median and p99 in ms, and
the server process's own CPU per request (from /proc: its threads included, the
sandboxes' processes apart): on a busy machine a steadier figure than time.

    python bench/bench_server.py [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

from engine.client import open_client

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) of process ``pid``, all its threads, its children apart."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(label: str, calls: int, step: Callable[[], Awaitable[object]], server: int) -> None:
    for _ in range(min(10, calls)):
        await step()
    samples = []
    cpu = _cpu_s(server)
    for _ in range(calls):
        started = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - started) * 1000)
    cpu = _cpu_s(server) - cpu
    median, p99 = _quantiles(samples)
    print(f"{label:<38} median {median:7.2f} ms   p99 {p99:7.2f} ms   server CPU {cpu / calls * 1000:5.2f} ms/call"
          f"   ({calls} calls)")


async def main(calls: int) -> None:
    state = tempfile.mkdtemp(prefix="sconnect-bench-", dir="/tmp")
    os.chmod(state, 0o711)
    env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET}
    server = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--state-dir", f"{state}/state"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        token = subprocess.run(
            [sys.executable, "-m", "engine", "token", "issue", "--sub", "bench", "--role", "user",
             "--state-dir", f"{state}/state"], env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        async with open_client(url, token) as client:
            sid = (await client.start_session("assistant")).session_id
            print(f"load average {os.getloadavg()[0]:.2f}; server CPU: the server process's own (its threads "
                  "included, the sandboxes' processes apart)")
            pid = server.pid
            await _measure("protocol round trip (tool_list)", calls, client.list_tools, pid)
            await _measure("agent turn, no tool (hello)", calls, lambda: client.converse(sid, "hello"), pid)
            await _measure("direct tool_call, sandboxed calculator", calls,
                           lambda: client.call_tool("calculator", {"expression": "17*23"}), pid)
            await _measure("agent turn with calculator", calls, lambda: client.converse(sid, "what is 17*23"), pid)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    trio.run(main, parser.parse_args().calls)
