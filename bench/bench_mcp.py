"""A level-0 tool call over MCP (Streamable HTTP): our endpoint against the MCP SDK's own server.

Run by hand: `python bench/bench_mcp.py [--calls 200] [--clients 20] [--mode legacy|2026-07-28]`.

Two servers run side by side as subprocesses, both on hypercorn's Trio worker:
- ours: `sconnect serve --mcp-port 0` on a copy of the shipped configuration; the call is
  `calculator` (level 0): decided by policy, run in a fresh sandbox (bubblewrap where it
  works, else a plain process), audited (fsync'd SQLite) - the whole action path;
- the SDK's: a low-level `mcp.server.lowlevel.Server` whose `calculator` adds two numbers
  in-process (no isolation, no policy, no audit), on the SDK's own Streamable HTTP app.

The same client (the SDK's `Client`, in this process) calls each: sequentially on one
session, then from --clients sessions at once. Prints p50/p99 latency of one
`tools/call` and calls per second, and the ratios ours/SDK. For reference, the same
call through our own WebSocket protocol (`engine.client`): the difference is what the
MCP layer costs on top of the engine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SECRET = "bench-mcp-secret-0123456789abcdef0123456789abcdef"
ECHO = """\
name: echo
description: Echo the arguments back (bench tool).
permission_level: 0
command: [/bin/cat]
parameters: {type: object}
sandbox: {timeout: 5s}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- the SDK's server (run as a subprocess of this script) ------------------------------


def serve_sdk() -> None:
    """Print the URL, then serve until killed."""
    from functools import partial

    import hypercorn.trio
    import mcp_types as types
    from hypercorn.config import Config
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
        return types.ListToolsResult(tools=[
            types.Tool(name=name, description=name, input_schema=schema) for name in ("calculator", "echo")
        ])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        if params.name == "echo":
            result = arguments
        else:
            left, right = str(arguments["expression"]).split("+")
            result = {"expression": arguments["expression"], "result": int(left) + int(right)}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=str(result))], structured_content=result
        )

    app = Server("sdk-baseline", on_list_tools=list_tools, on_call_tool=call_tool).streamable_http_app()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn.trio.serve, app, config))
            print(f"{binds[0]}/mcp", flush=True)

    trio.run(main)


# --- the client side ---------------------------------------------------------------------


async def _calls(
    url: str, token: str | None, mode: str, tool: str, count: int, latencies: list[float],
    ready: _Countdown, go: trio.Event,
) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            await client.list_tools()
            # Sessions are opened before the clock starts: the calls are measured, not the handshakes.
            await _arrive(ready, go)
            for i in range(count):
                expression = {"expression": f"{i}+1"}
                started = time.perf_counter()
                result = await client.call_tool(tool, expression)
                latencies.append(time.perf_counter() - started)
                expected = i + 1 if tool == "calculator" else None
                if result.is_error or (expected is not None and result.structured_content["result"] != expected):
                    raise SystemExit(f"{url}: unexpected result {result}")


async def _ws_calls(
    url: str, token: str | None, mode: str, tool: str, count: int, latencies: list[float],
    ready: _Countdown, go: trio.Event,
) -> None:
    """The same call through our own WebSocket protocol: what the MCP layer adds on top of the engine."""
    from engine.client import open_client

    async with open_client(url, token) as client:
        await client.list_tools()
        await _arrive(ready, go)
        for i in range(count):
            started = time.perf_counter()
            result = await client.call_tool(tool, {"expression": f"{i}+1"})
            latencies.append(time.perf_counter() - started)
            if str(result.status) != "ok":
                raise SystemExit(f"{url}: unexpected result {result}")


class _Countdown:
    def __init__(self, count: int) -> None:
        self.count = count


async def _arrive(ready: _Countdown, go: trio.Event) -> None:
    ready.count -= 1
    if ready.count == 0:
        go.set()
    await go.wait()


async def _measure(
    url: str, token: str | None, mode: str, tool: str, calls: int, clients: int
) -> dict[str, tuple[float, float, float]]:
    caller = _ws_calls if url.startswith("ws") else _calls
    found = {}
    for label, sessions in (("sequential", 1), (f"{clients} clients", clients)):
        latencies: list[float] = []
        go = trio.Event()
        waiting = _Countdown(sessions)
        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                nursery.start_soon(caller, url, token, mode, tool, max(1, calls // sessions), latencies, waiting, go)
            await go.wait()
            began = time.perf_counter()
        elapsed = time.perf_counter() - began
        found[label] = (_percentile(latencies, 0.5), _percentile(latencies, 0.99), len(latencies) / elapsed)
    return found


def _start(argv: list[str], env: dict[str, str], prefix: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    """The process, the line starting with ``prefix`` (prefix removed), and the lines before it."""
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    before = []
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"{argv[2:4]} did not start")
        if line.startswith(prefix):
            return process, line.strip().removeprefix(prefix), before
        before.append(line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per variant (default 200)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent sessions (default 20)")
    parser.add_argument("--mode", default="legacy", help="legacy (2025-11-25 sessions) or 2026-07-28 (stateless)")
    parser.add_argument("--tool", choices=("calculator", "echo"), default="calculator",
                        help="ours: calculator (a Python tool: a sandboxed interpreter per call) or echo "
                        "(/bin/cat in the sandbox); the SDK's server serves both names in-process")
    parser.add_argument("--serve-sdk", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sdk:
        serve_sdk()
        return
    import jwt

    base = Path(tempfile.mkdtemp(prefix="bench-mcp-", dir="/tmp"))
    os.chmod(base, 0o711)
    processes: list[subprocess.Popen[str]] = []
    try:
        for name in ("agents.d", "tools.d", "resources.d", "policies"):
            shutil.copytree(REPO / name, base / "config" / name)
        (base / "config" / "tools.d" / "echo.yaml").write_text(ECHO)
        env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET, "PYTHONPATH": str(REPO)}
        ours, ours_url, printed = _start(
            [sys.executable, "-m", "engine", "serve", "--port", "0", "--mcp-port", "0", "--config",
             str(base / "config"), "--state-dir", str(base / "state"),
             # A benchmark floods on purpose: let every call run at once, none rate-limited.
             "--limit", "tool_runs=64", "--limit", "tool_runs_per_session=64"],
            env, "mcp: ",
        )
        processes.append(ours)
        ws_url = printed[0]
        sdk, sdk_url, _ = _start([sys.executable, __file__, "--serve-sdk"], env, "http://")
        sdk_url = "http://" + sdk_url
        processes.append(sdk)
        token = jwt.encode({"sub": "bench", "roles": ["user"], "exp": int(time.time()) + 3600}, SECRET, "HS256")
        import sandbox

        print(f"sandbox: {sandbox.detect().summary}")
        print(f"mode: {args.mode}; tool: {args.tool}; {args.calls} calls per variant")
        results = {}
        servers = (
            ("sdk (in-process, no isolation)", sdk_url, None), ("ours (policy, sandbox, audit)", ours_url, token),
            ("ours over our WebSocket protocol", ws_url, token),
        )
        for label, url, tok in servers:
            trio.run(_measure, url, tok, args.mode, args.tool, 10, 1)  # warm-up
            results[label] = trio.run(_measure, url, tok, args.mode, args.tool, args.calls, args.clients)
        print(f"{'server':34} {'variant':12} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
        for label, found in results.items():
            for variant, (p50, p99, rate) in found.items():
                print(f"{label:34} {variant:12} {p50 * 1000:8.2f} {p99 * 1000:8.2f} {rate:9.1f}")
        sdk_found, ours_found = results[servers[0][0]], results[servers[1][0]]
        for variant in ours_found:
            p50 = ours_found[variant][0] / sdk_found[variant][0]
            rate = ours_found[variant][2] / sdk_found[variant][2]
            print(f"ratio ours/sdk, {variant}: p50 x{p50:.2f}, calls/s x{rate:.2f}")
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
