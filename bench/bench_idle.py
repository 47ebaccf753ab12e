"""Memory per idle connection: our server beside a bare trio-websocket server.

Starts each server as its own process, opens N WebSocket connections to it from
this process (ours: authenticated with a JWT, each one waits for the ``tool_list``
the server sends on connect), lets them sit idle, and prints the server process's
memory growth divided by N: RSS and PSS (``/proc/PID/smaps_rollup``).  The bare
server is trio-websocket's own ``serve_websocket`` with a handler that accepts and
echoes: the floor the WebSocket library pays.

Descriptors: the soft RLIMIT_NOFILE of this process is raised to its hard limit
(the server processes inherit it; ours raises its own again).  N is capped to what
the limit allows (each side holds one descriptor per connection), and the cap is
printed.

    python bench/bench_idle.py [--connections 10000] [--only ours|bare]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, DisconnectionTimeout, HandshakeError, open_websocket_url

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
CONFIG_DIRS = ("agents.d", "tools.d", "resources.d", "policies")
# Handshakes in flight at once from this process (the server's per-address limit is far higher).
OPENING = 64

BARE_SERVER = """
import sys, trio
from trio_websocket import serve_websocket, ConnectionClosed

async def handler(request):
    ws = await request.accept()
    while True:
        try:
            await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            return

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"ws://127.0.0.1:{server.port}/", flush=True)

trio.run(main)
"""


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One server process and where it listens."""

    def __init__(self, kind: str, connections: int) -> None:
        self.kind = kind
        self.tmp = Path(tempfile.mkdtemp(prefix="sconnect-idle-", dir="/tmp"))
        os.chmod(self.tmp, 0o711)
        env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET}
        if kind == "bare":
            argv = [sys.executable, "-c", BARE_SERVER]
        else:
            for name in CONFIG_DIRS:
                shutil.copytree(REPO / name, self.tmp / "config" / name)
            room = str(connections + 100)
            argv = [sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(self.tmp / "config"),
                    "--state-dir", str(self.tmp / "state"), "--limit", f"connections={room}",
                    "--limit", f"connections_per_subject={room}", "--limit", f"handshakes_per_peer={OPENING * 2}"]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("ws"):
            self.stop()
            raise RuntimeError(f"the {kind} server did not start")
        self.token = ""
        if kind == "ours":
            self.token = subprocess.run(
                [sys.executable, "-m", "engine", "token", "issue", "--sub", "bench", "--role", "user",
                 "--state-dir", str(self.tmp / "state")], env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()

    @property
    def target(self) -> str:
        return f"{self.url}?token={self.token}" if self.token else self.url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def hold(server: Server, count: int) -> tuple[int, int, float]:
    """Open ``count`` connections, then measure; returns (RSS KiB, PSS KiB, seconds to open)."""
    opened = 0
    all_open = trio.Event()
    release = trio.Event()
    limiter = trio.CapacityLimiter(OPENING)

    async def one() -> None:
        nonlocal opened
        await limiter.acquire()
        opening = True
        try:
            async with open_websocket_url(server.target, connect_timeout=60, disconnect_timeout=2) as ws:
                if server.kind == "ours":
                    await ws.get_message()  # the tool_list sent on connect: authenticated and served
                limiter.release()
                opening = False
                opened += 1
                if opened == count:
                    all_open.set()
                await release.wait()
        except (HandshakeError, ConnectionClosed, DisconnectionTimeout, OSError):
            if not release.is_set():
                raise  # a connection lost while measuring: the numbers would be wrong
        finally:
            if opening:
                limiter.release()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        await all_open.wait()
        took = time.perf_counter() - started
        await trio.sleep(2)  # the server finishes what it does after the handshake
        rss, pss = memory_kib(server.process.pid)
        release.set()
    return rss, pss, took


async def warm(server: Server) -> None:
    """A few connections opened and closed: imports and caches of the first one are not per-connection."""
    for _ in range(20):
        async with open_websocket_url(server.target) as ws:
            if server.kind == "ours":
                await ws.get_message()


async def measure(kind: str, count: int) -> None:
    server = Server(kind, count)
    try:
        await warm(server)
        await trio.sleep(1)
        rss0, pss0 = memory_kib(server.process.pid)
        cpu0 = cpu_s(server.process.pid)
        rss, pss, took = await hold(server, count)
        cpu = cpu_s(server.process.pid) - cpu0
        print(f"{kind:<5} {count:>6} idle connections: RSS {(rss - rss0) / count:5.1f} KiB each, "
              f"PSS {(pss - pss0) / count:5.1f} KiB each  (server RSS {rss0 / 1024:.0f} -> {rss / 1024:.0f} MiB; "
              f"opened in {took:.1f} s; server CPU {cpu * 1000 / count:.2f} ms per connection)", flush=True)
    finally:
        server.stop()


async def main(count: int, only: str | None) -> None:
    limit = raise_nofile()
    # This process holds one descriptor per connection, and so does the server; keep 200 spare.
    cap = max(1, limit - 200)
    if count > cap:
        print(f"RLIMIT_NOFILE is {limit}: {count} connections capped to {cap}")
        count = cap
    print(f"RLIMIT_NOFILE {limit}; load average {os.getloadavg()[0]:.2f}", flush=True)
    for kind in ("bare", "ours"):
        if only in (None, kind):
            await measure(kind, count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--only", choices=("ours", "bare"))
    args = parser.parse_args()
    trio.run(main, args.connections, args.only)
