"""Full stack, one run: our isolated `calculator` call against the MCP SDK's unisolated one.

Run by hand: `python bench/compare_mcp.py [--calls 200] [--clients 20] [--rounds 2]`.

Servers, each its own process, all started before anything is timed:
- ours: `sconnect serve --port 0 --mcp-port 0` on a copy of the shipped configuration.
  `calculator` (level 0) as shipped, `isolation: pool`, and `calculator_ns`, the same
  tool declared `isolation: namespaces` (a fresh bubblewrap sandbox and interpreter per
  call). Each call is the whole action: session, schema check, policy decision, its own
  isolated process, two audit records committed (fsync'd SQLite) before the result;
- the SDK's, over Streamable HTTP (hypercorn's Trio worker, `bench_mcp.py --serve-sdk`)
  and over stdio (`mcp.server.stdio`, one server process per client, as stdio works): a
  low-level `Server` whose `calculator` adds two numbers in-process - no isolation, no
  policy, no audit.

Variants: ours over MCP HTTP and over our WebSocket protocol, each with the pool and
with namespaces, and over MCP HTTP in the stateless 2026-07-28 revision with the pool (every
other MCP variant, the SDK's included, opens a 2025-11-25 session); the SDK over HTTP and
over stdio. Each round runs every variant in
turn (alternating, so drifting machine load spreads over all of them): sequential calls
on one session, then --clients sessions at once (calls/s). Sessions are opened before
the clock starts. CPU per call is the CPU the serving side used during the timed calls
(the server process and all its descendants: bubblewrap, the fork server and its
workers, reaped sandboxes - our server runs under a small child-subreaper wrapper so that
a namespace sandbox's pid 1, which bubblewrap leaves to be reaped by init, is counted
too), never the client's; the clients run in this process; "of
it server" is the server process's own threads, the rest its sandboxes (for the SDK's
stdio variant, every server process counts as "server"). With
--rounds > 1 each figure is the median over rounds. Prints a table and the ratios to the
SDK, with the load average before and after (the machine is shared: say it with the
numbers).
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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_mcp import SECRET, _percentile, _start, _stop  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
_STDIO_FLAG = "--serve-sdk-stdio"
# The stateless protocol revision (no session; the SDK's client negotiates it with mode=MODERN).
MODERN = "2026-07-28"


def serve_sdk_stdio() -> None:
    """The SDK's server over stdio, same tool as `bench_mcp.serve_sdk` (asyncio, the SDK's default)."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
        return types.ListToolsResult(tools=[types.Tool(name="calculator", description="adds", input_schema=schema)])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        left, right = str(arguments["expression"]).split("+")
        result = {"expression": arguments["expression"], "result": int(left) + int(right)}
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(result))],
                                    structured_content=result)  # fmt: skip

    server = Server("sdk-stdio-baseline", on_list_tools=list_tools, on_call_tool=call_tool)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


# --- CPU of the serving side --------------------------------------------------------------


def reaping_wrapper(argv: list[str]) -> None:
    """Run `argv` as our child while being a child subreaper: a namespace sandbox's pid 1
    is left behind by bubblewrap's monitor (which exits first) and would be reaped by the
    host's init, taking the sandbox's CPU time with it; adopted here and reaped with
    wait(), it lands in our cutime, so the server's tree counts it."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    child = subprocess.Popen(argv)
    print(f"server-pid: {child.pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            while True:  # what is left of its tree
                try:
                    os.wait()
                except ChildProcessError:
                    break
            raise SystemExit(code)



def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, utime+stime, cutime+cstime) in ticks of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _tree_ticks(roots: Callable[[], list[int]], own: Callable[[], list[int]]) -> tuple[int, int]:
    """CPU ticks of the root processes and every live descendant (reaped children are in
    their parent's cutime/cstime, so a sandbox that ended during the calls still counts),
    and the part of it spent by the `own` processes' threads (the server process itself)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                table[int(name)] = found
    wanted = set(roots())
    changed = True
    while changed:
        changed = False
        for pid, (parent, _ticks, _children) in table.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    total = sum(table[pid][1] + table[pid][2] for pid in wanted if pid in table)
    return total, sum(table[pid][1] for pid in own() if pid in table)


def _stdio_servers() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    if _STDIO_FLAG.encode() in handle.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


# --- the callers: one session each, timed between two barriers -------------------------------


class _Barrier:
    """All sessions open before the clock starts; all finished before it stops."""

    def __init__(self, count: int) -> None:
        self.waiting = count
        self.arrived = trio.Event()
        self.release = trio.Event()

    async def arrive(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.arrived.set()
        await self.release.wait()


async def _mcp_session(target: Any, token: str | None, tool: str, count: int, latencies: list[float],
                       start: _Barrier, stop: _Barrier, mode: str = "legacy") -> None:  # fmt: skip
    from mcp import Client

    if isinstance(target, str):
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with create_mcp_http_client(headers=headers) as http:
            async with Client(streamable_http_client(target, http_client=http), mode=mode) as client:
                await _timed(client.call_tool, client.list_tools, tool, count, latencies, start, stop)
    else:
        async with Client(target, mode="legacy") as client:
            await _timed(client.call_tool, client.list_tools, tool, count, latencies, start, stop)


async def _ws_session(url: str, token: str | None, tool: str, count: int, latencies: list[float],
                      start: _Barrier, stop: _Barrier) -> None:  # fmt: skip
    from engine.client import open_client

    async with open_client(url, token) as client:
        await _timed(client.call_tool, client.list_tools, tool, count, latencies, start, stop)


async def _timed(call: Any, warm: Any, tool: str, count: int, latencies: list[float],
                 start: _Barrier, stop: _Barrier) -> None:  # fmt: skip
    await warm()
    await start.arrive()
    for i in range(count):
        began = time.perf_counter()
        result = await call(tool, {"expression": f"{i}+1"})
        latencies.append(time.perf_counter() - began)
        _check(result, i + 1)
    await stop.arrive()


def _check(result: Any, expected: int) -> None:
    if hasattr(result, "structured_content"):  # MCP
        ok = not result.is_error and result.structured_content["result"] == expected
    else:  # our WebSocket client
        ok = str(result.status) == "ok" and result.output["result"] == expected
    if not ok:
        raise SystemExit(f"unexpected result {result}")


async def _phase(session: Any, target: Any, token: str | None, tool: str, calls: int, sessions: int,
                 cpu: tuple[Callable[[], list[int]], Callable[[], list[int]]]) -> dict[str, float]:  # fmt: skip
    latencies: list[float] = []
    start, stop = _Barrier(sessions), _Barrier(sessions)
    per_session = max(1, calls // sessions)
    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(session, target, token, tool, per_session, latencies, start, stop)
        await start.arrived.wait()
        (ticks, own), began = _tree_ticks(*cpu), time.perf_counter()
        start.release.set()
        await stop.arrived.wait()
        elapsed, (ticks_after, own_after) = time.perf_counter() - began, _tree_ticks(*cpu)
        stop.release.set()
    per_call = 1e3 / _TICK / len(latencies)
    return {
        "p50": _percentile(latencies, 0.5) * 1e3, "p99": _percentile(latencies, 0.99) * 1e3,
        "rate": len(latencies) / elapsed, "cpu": (ticks_after - ticks) * per_call,
        "server": (own_after - own) * per_call,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per variant and phase (default 200)")
    parser.add_argument("--ns-calls", type=int, default=100, help="the same for the namespaces variants (slow)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent sessions (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are printed")
    parser.add_argument(_STDIO_FLAG, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reaping-wrapper", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if getattr(args, _STDIO_FLAG.strip("-").replace("-", "_")):
        serve_sdk_stdio()
        return
    if args.reaping_wrapper:
        reaping_wrapper(args.reaping_wrapper)
        return
    import jwt
    from mcp import StdioServerParameters

    import sandbox

    base = Path(tempfile.mkdtemp(prefix="bench-compare-", dir="/tmp"))
    os.chmod(base, 0o711)
    processes: list[subprocess.Popen[str]] = []
    load_before = os.getloadavg()
    try:
        for name in ("agents.d", "tools.d", "resources.d", "policies"):
            shutil.copytree(REPO / name, base / "config" / name)
        shipped = (base / "config" / "tools.d" / "calculator.yaml").read_text()
        if "isolation: pool" not in shipped:
            raise SystemExit("the shipped calculator is expected to declare isolation: pool")
        ns = shipped.replace("name: calculator", "name: calculator_ns", 1).replace(
            "isolation: pool", "isolation: namespaces", 1)
        (base / "config" / "tools.d" / "calculator_ns.yaml").write_text(ns)
        env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET, "PYTHONPATH": str(REPO)}
        ours, mcp_url, printed = _start(
            [sys.executable, __file__, "--reaping-wrapper",
             sys.executable, "-m", "engine", "serve", "--port", "0", "--mcp-port", "0", "--config",
             str(base / "config"), "--state-dir", str(base / "state"),
             # A benchmark floods on purpose: let every call run at once, none rate-limited.
             "--limit", "tool_runs=64", "--limit", "tool_runs_per_session=64"],
            env, "mcp: ",
        )  # fmt: skip
        processes.append(ours)
        server_pid = int(printed[0].removeprefix("server-pid: "))
        ws_url = printed[1]
        ours_cpu = (lambda: [ours.pid], lambda: [server_pid])
        sdk, sdk_url, _ = _start([sys.executable, str(REPO / "bench" / "bench_mcp.py"), "--serve-sdk"], env,
                                 "http://")  # fmt: skip
        processes.append(sdk)
        sdk_url = "http://" + sdk_url
        stdio = StdioServerParameters(command=sys.executable, args=[__file__, _STDIO_FLAG], env=env, cwd=str(REPO))
        token = jwt.encode({"sub": "bench", "roles": ["user"], "exp": int(time.time()) + 3600}, SECRET, "HS256")
        print(sandbox.detect().summary)
        print(f"{args.calls} calls per phase ({args.ns_calls} for namespaces), {args.clients} clients, "
              f"{args.rounds} round(s); load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
        variants = [
            ("ours MCP HTTP, pool", _mcp_session, mcp_url, token, "calculator", ours_cpu),
            ("ours MCP HTTP 2026, pool", partial(_mcp_session, mode=MODERN), mcp_url, token, "calculator", ours_cpu),
            ("ours WebSocket, pool", _ws_session, ws_url, token, "calculator", ours_cpu),
            ("ours MCP HTTP, namespaces", _mcp_session, mcp_url, token, "calculator_ns", ours_cpu),
            ("ours WebSocket, namespaces", _ws_session, ws_url, token, "calculator_ns", ours_cpu),
            ("MCP SDK HTTP, in-process", _mcp_session, sdk_url, None, "calculator", (lambda: [sdk.pid],) * 2),
            ("MCP SDK stdio, in-process", _mcp_session, stdio, None, "calculator", (_stdio_servers,) * 2),
        ]
        found: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _round in range(args.rounds):
            for label, session, target, tok, tool, cpu in variants:
                calls = args.ns_calls if "namespaces" in label else args.calls
                trio.run(_phase, session, target, tok, tool, 10, 1, cpu)  # warm-up (the pool starts here)
                for phase, sessions in (("sequential", 1), (f"{args.clients} clients", args.clients)):
                    result = trio.run(_phase, session, target, tok, tool, calls, sessions, cpu)
                    found.setdefault((label, phase), []).append(result)
        table = {key: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for key, runs in found.items()}
        print(f"\n{'variant':<28} {'phase':<12} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'CPU ms/call':>12} "
              f"{'of it server':>13}")
        for (label, phase), row in table.items():
            print(f"{label:<28} {phase:<12} {row['p50']:>8.2f} {row['p99']:>8.2f} {row['rate']:>9.1f} "
                  f"{row['cpu']:>12.2f} {row['server']:>13.2f}")
        print()
        for label, *_rest in (v for v in variants if v[0].startswith("ours")):
            for phase in ("sequential", f"{args.clients} clients"):
                for sdk_label in ("MCP SDK HTTP, in-process", "MCP SDK stdio, in-process"):
                    ours_row, sdk_row = table[(label, phase)], table[(sdk_label, phase)]
                    print(f"{label} / {sdk_label.split(',')[0]}, {phase}: p50 x{ours_row['p50'] / sdk_row['p50']:.2f}, "
                          f"calls/s x{ours_row['rate'] / sdk_row['rate']:.2f}, "
                          f"CPU/call x{ours_row['cpu'] / max(sdk_row['cpu'], 1e-9):.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        _stop(processes, base)


if __name__ == "__main__":
    main()
