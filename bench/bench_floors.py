"""What this machine's kernel charges for the parts of an isolated call no code of ours can skip.

Run by hand: `python bench/bench_floors.py [--calls 300] [--dir DIR]`. Nothing of the
service runs: each figure is the bare mechanism, in a plain Python process, so that the
service's own figures (`bench_pool.py`, `bench_sandbox.py`, `compare_mcp.py`) can be read
against what is left once every line of ours is gone:

- a pre-forked call: a child forked ahead of time from an interpreter like the pool's
  fork server (``/usr/bin/python3 -S -I``, json and the shipped calculator imported,
  ``gc.freeze()``) blocks on a pipe; timed from writing its arguments to reading its result (``result``)
  and to having reaped it (``reaped``): the fresh process per call that issue 14 asks for,
  with no sandbox, cgroup, Landlock or seccomp around it;
- an exec: ``os.posix_spawn`` of /bin/true and its reap;
- a durable commit: 16 KiB written and ``fdatasync``'d in DIR (default: the temporary
  directory; point it at the audit log's file system): one audit commit's floor;
- a loopback round trip: one byte to an echo process over TCP on 127.0.0.1 and back;
- a WebSocket exchange in the stack we chose (trio and trio-websocket on both sides,
  JSON): a request frame like our ``tool_call`` to a bare server process, which parses
  it and answers two frames like our ``agent_action`` and ``agent_result``, parsed by the
  client; with the CPU both processes spend on it;
- a memory cgroup (root with a memory controller only): make one with its limit, move a
  process in, remove it.

The last lines add up the floor of one sequential isolated call: a round trip for the
request and its answer (bare TCP, then the WebSocket exchange), the pre-forked call
reaped, and the commit of its execution record (the decision's commit overlaps the
sandbox start); and the CPU an isolated call cannot do without (the pre-forked call, the
WebSocket exchange, two commits), with the calls/s that caps on this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(values) * 1e3:6.3f} ms  p90 {p90 * 1e3:6.3f} ms"


def spawn_true() -> float:
    started = time.perf_counter()
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    return time.perf_counter() - started


def durable_commit(fd: int, block: bytes) -> float:
    started = time.perf_counter()
    os.pwrite(fd, block, 0)
    os.fdatasync(fd)
    return time.perf_counter() - started


_REQUEST = {"type": "tool_call", "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "name": "calculator",
            "arguments": {"expression": "17*23"}, "session_id": None}
_REPLIES = (
    {"type": "agent_action", "id": "a1b2c3d4e5f60718293a4b5c6d7e8f90", "reply_to": _REQUEST["id"],
     "action_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "session_id": None, "kind": "tool", "name": "calculator",
     "arguments": {"expression": "17*23"}, "permission_level": 0, "requires_approval": False, "approver": None,
     "decision": "allow", "policy": "default-allow-level-0", "reason": "level 0 tools run without approval"},
    {"type": "agent_result", "id": "b1c2d3e4f5061728394a5b6c7d8e9f0a", "reply_to": _REQUEST["id"],
     "action_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "session_id": None, "status": "ok",
     "output": {"expression": "17*23", "result": 391}, "reason": "", "content": None},
)


def serve_ws_echo() -> None:
    """`--ws-echo`: a bare trio-websocket server; prints its port, answers each frame with two."""
    import trio
    from trio_websocket import WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        replies = [json.dumps(reply) for reply in _REPLIES]
        while True:
            try:
                json.loads(await ws.get_message())
            except Exception:  # noqa: BLE001  # the client went away
                return
            for reply in replies:
                await ws.send_message(reply)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            print(server.port, flush=True)

    trio.run(main)


def websocket_exchanges(calls: int) -> tuple[list[float], float]:
    """Request/two-reply exchanges with a bare trio-websocket server process: their times,
    and the CPU seconds per exchange of both processes."""
    import trio
    from trio_websocket import open_websocket_url

    server = subprocess.Popen([sys.executable, __file__, "--ws-echo"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())

        async def exchange(ws: Any) -> None:
            await ws.send_message(json.dumps(_REQUEST))
            for _ in _REPLIES:
                json.loads(await ws.get_message())

        async def run() -> tuple[list[float], float]:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                for _ in range(min(calls, 50)):
                    await exchange(ws)
                times = []
                before = _process_cpu(server.pid) + _own_cpu()
                for _ in range(calls):
                    started = time.perf_counter()
                    await exchange(ws)
                    times.append(time.perf_counter() - started)
                spent = _process_cpu(server.pid) + _own_cpu() - before
            return times, spent / calls

        return trio.run(run)
    finally:
        server.terminate()
        server.wait()


def _process_cpu(pid: int) -> float:
    """Seconds on a CPU of process `pid`'s threads so far (the scheduler's count, in nanoseconds)."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/schedstat") as handle:
            total += int(handle.read().split()[0])
    return total / 1e9


def _own_cpu() -> float:
    """User + system seconds of this process (microseconds' resolution)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loopback_round_trips(calls: int) -> list[float]:
    listener = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:
        peer, _ = listener.accept()
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while byte := peer.recv(1):
            peer.sendall(byte)
        os._exit(0)
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.sendall(b"x")
        client.recv(1)
        times.append(time.perf_counter() - started)
    client.close()
    listener.close()
    os.waitpid(pid, 0)
    return times


def cgroup_cycle(controller: Any) -> tuple[float, float]:
    """Make a limited cgroup and move a sleeping child in; then remove it once the child
    is gone. Returns (make + move, remove)."""
    pid = os.fork()
    if pid == 0:
        os.read(os.open("/dev/null", os.O_RDONLY), 1)  # EOF at once; wait for the kill
        time.sleep(60)
        os._exit(0)
    from sandbox import _cgroup

    started = time.perf_counter()
    cgroup = _cgroup.make(controller, 256 << 20)
    cgroup.add(pid)
    made = time.perf_counter() - started
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    started = time.perf_counter()
    os.rmdir(cgroup.path)
    return made, time.perf_counter() - started


def _repeat(calls: int, step: Callable[[], object]) -> list:
    return [step() for _ in range(calls)]


def main(calls: int, directory: str) -> None:
    from sandbox import _cgroup

    print(f"load average {os.getloadavg()[0]:.2f}")
    # python3 -S -I, as the pool's fork server runs (`sandbox/_pool.py`)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_prefork.py")
    run = subprocess.run(["/usr/bin/python3", "-S", "-I", script, REPO, str(calls)], check=True, capture_output=True)
    prefork = json.loads(run.stdout)
    answered, reaped = prefork["answered"], prefork["reaped"]
    print(f"forking interpreter: {prefork['anon_kib']} KiB anonymous memory (the pool's fork server: ~5,100)")
    print(f"pre-forked call, result read   {_ms(answered)}")
    print(f"pre-forked call, child reaped  {_ms(reaped)}")
    print(f"posix_spawn /bin/true + reap   {_ms(_repeat(calls, spawn_true))}")
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        block = os.urandom(16384)
        before = _own_cpu()
        commits = _repeat(calls, lambda: durable_commit(handle.fileno(), block))
        commit_cpu = (_own_cpu() - before) / calls
    print(f"16 KiB write + fdatasync       {_ms(commits)}  ({directory})")
    trips = loopback_round_trips(calls)
    print(f"loopback TCP round trip        {_ms(trips)}")
    exchanges, exchange_cpu = websocket_exchanges(calls)
    print(f"WebSocket exchange, trio-websocket, 1 frame + 2 back  {_ms(exchanges)}")
    probe = _cgroup.probe()
    controller = probe.controller
    if controller is None:
        print(f"memory cgroup                  not measured: {probe.describe()}")
    else:
        cycles = _repeat(min(calls, 200), lambda: cgroup_cycle(controller))
        print(f"memory cgroup make + move in   {_ms([c[0] for c in cycles])}")
        print(f"memory cgroup remove           {_ms([c[1] for c in cycles])}")
    floor = statistics.median(trips) + statistics.median(reaped) + statistics.median(commits)
    print(f"floor of one sequential isolated call (round trip + pre-forked call reaped + commit): {floor * 1e3:.3f} ms")
    stack = statistics.median(exchanges) + statistics.median(reaped) + statistics.median(commits)
    print(f"the same over the WebSocket exchange instead of the bare round trip: {stack * 1e3:.3f} ms")
    cores = len(os.sched_getaffinity(0))
    cpu = prefork["cpu_s"] + exchange_cpu + 2 * commit_cpu
    print(f"CPU per isolated call at least: pre-forked call {prefork['cpu_s'] * 1e3:.3f} ms (fork, call, exit, reap), "
          f"WebSocket exchange {exchange_cpu * 1e3:.3f} ms (both sides), two commits {2 * commit_cpu * 1e3:.3f} ms: "
          f"{cpu * 1e3:.3f} ms, so at most {cores / cpu:,.0f} calls/s on {cores} cores")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ws-echo"]:
        serve_ws_echo()
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the durable commits go")
    args = parser.parse_args()
    main(args.calls, args.dir)
