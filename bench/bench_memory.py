"""What memory and feedback cost a turn, from a real client over loopback.

Starts ``sconnect serve`` on the shipped configuration as a separate process and
measures, one request at a time: a turn of an agent without memory (``bookkeeper``,
"hello"), the same turn of the ``assistant`` (memory on: the recall is decided, read
and audited, the turn recorded) with 0 and then 20 memories, a ``remember`` turn, a
``feedback`` frame and a ``memory_list`` frame.  Prints median and p99 in ms.

    python bench/bench_memory.py [--calls 200]
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
from itertools import count

import trio

from engine.client import open_client
from engine.protocol import Feedback, MemoryForget, MemoryListRequest, new_id

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


async def _measure(label: str, calls: int, step: Callable[[], Awaitable[object]]) -> None:
    for _ in range(min(10, calls)):
        await step()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - started) * 1000)
        # A turn is not a reply to its user_message for the rate limit (50 a second refill): pace the turns.
        await trio.sleep(0.025)
    ordered = sorted(samples)
    median, p99 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{label:<38} median {median:7.2f} ms   p99 {p99:7.2f} ms   ({calls} calls)")


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
            plain = (await client.start_session("bookkeeper")).session_id
            sid = (await client.start_session("assistant")).session_id
            await _measure("turn, memory off (bookkeeper)", calls, lambda: client.converse(plain, "hello"))
            await _measure("turn, memory on, 0 memories", calls, lambda: client.converse(sid, "hello"))
            for i in range(20):
                await client.converse(sid, f"remember fact number {i}")
                await trio.sleep(0.025)
            await _measure("turn, memory on, 20 memories", calls, lambda: client.converse(sid, "hello"))
            await client.request(MemoryForget(id=new_id(), all=True))
            numbers = count()
            await _measure("remember turn", min(calls, 80),
                           lambda: client.converse(sid, f"remember bench fact {next(numbers)}"))
            turn = (await client.converse(sid, "hello")).response.turn_id
            await _measure("feedback frame", calls,
                           lambda: client.request(Feedback(id=new_id(), turn_id=turn, rating=1)))
            await _measure("memory_list frame", calls, lambda: client.request(MemoryListRequest(id=new_id())))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    trio.run(main, parser.parse_args().calls)
