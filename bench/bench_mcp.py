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

`python bench/bench_mcp.py --layer [--requests 400] [--rounds 7]`: the SDK's HTTP layer
alone, in this process, without hypercorn, sockets or our engine (a tool that doubles a
number): the thread CPU of one `tools/call` handed to an ASGI app as the server hands it,
best of --rounds. Rows: the SDK's Starlette app with its OpenTelemetry middleware (how
our gate called it before), our direct path (`engine.mcp._http.answering_errors` around
the session manager, the middleware wrapped in `engine.mcp._gateway.WhenTracing`, tracing
off), for a 2025-11-25 session and a stateless 2026-07-28 call; and, for scale, the same
2026-07-28 call's checks done by calling the SDK's own functions in a row (security,
Accept, envelope, routing and Mcp-Param headers, params and result validation, a
disconnect watcher task) with no per-request task group, stream, runner or session: what
a lean path that kept every check would cost. Its answer is compared with the SDK's.
Timing noise from other processes shows as spread between rounds, hence the best.

`python bench/bench_mcp.py --vs OTHER_CHECKOUT [--calls 200] [--rounds 7]`: ours from this
checkout against ours from another (a git worktree, or `git archive main | tar -x -C DIR`),
each on a copy of its own tree's shipped configuration, one SDK client session each, over
2025-11-25 and over 2026-07-28: the `calculator` calls alternate between the two servers
(A, B, A, B...; who goes first alternates by round), so both see the same load. Prints the
medians over rounds of each server's CPU per call (its process, from /proc), of it its event
loop thread's (ns, from schedstat), and the p50. `chrt -f 20` (root) before it keeps other
processes' load off both servers.
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


# --- the SDK's HTTP layer alone (--layer) ----------------------------------------------------

_LAYER_HEADERS = [(b"host", b"127.0.0.1:8000"), (b"accept", b"application/json, text/event-stream"),
                  (b"content-type", b"application/json")]
_LAYER_SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def _layer_server() -> Any:
    import mcp_types as types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tool = types.Tool(name="double", description="doubles", input_schema=_LAYER_SCHEMA)
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        value = 2 * int((params.arguments or {})["x"])
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(value))])

    return Server("layer", on_list_tools=list_tools, on_call_tool=call_tool)


def _stop(processes: list[subprocess.Popen[str]], base: Path) -> None:
    """End the benchmark's servers (SIGTERM, SIGKILL after 15 s) and remove their directory."""
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(base, ignore_errors=True)


async def _exchange(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    """One POST to /mcp through ``app``, as hypercorn hands it over: status, headers, whole body."""
    from tests.mcp.asgi import exchange

    return await exchange(app, "POST", headers, body)


def _checks_in_a_row(server: Any, settings: Any) -> Any:
    """The SDK's checks of a 2026-07-28 tools/call, called in a row, then the tool: for scale only."""
    import json

    import mcp_types as types
    from mcp.server.streamable_http import check_accept_headers
    from mcp.server.transport_security import TransportSecurityMiddleware
    from mcp.shared.inbound import (
        InboundModernRoute,
        classify_inbound_request,
        find_duplicated_routing_header,
        validate_mcp_param_headers,
    )
    from mcp_types import methods
    from starlette.requests import Request

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        if await TransportSecurityMiddleware(settings).validate_request(request, is_post=True) is not None:
            raise SystemExit("the security check refused the benchmark's request")
        has_json, has_sse = check_accept_headers(request)
        decoded = json.loads(await request.body())
        rpc = types.JSONRPCRequest.model_validate(decoded)
        verdict = classify_inbound_request(decoded, headers=dict(request.headers))
        params = rpc.params or {}
        if not (has_json and has_sse) or find_duplicated_routing_header(request.headers.items()) is not None \
                or not isinstance(verdict, InboundModernRoute) \
                or validate_mcp_param_headers(_LAYER_SCHEMA, params.get("arguments") or {}, request.headers):
            raise SystemExit("a check refused the benchmark's request")
        methods.validate_client_request("tools/call", verdict.protocol_version, params)
        typed = types.CallToolRequestParams.model_validate(params, by_name=False)

        async def watch(cancel: trio.CancelScope) -> None:
            while (await receive()).get("type") != "http.disconnect":
                pass
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            text = str(2 * int((typed.arguments or {})["x"]))
            result = types.CallToolResult(content=[types.TextContent(type="text", text=text)])
            nursery.cancel_scope.cancel()
        dumped = methods.serialize_server_result(
            "tools/call", verdict.protocol_version, result.model_dump(by_alias=True, mode="json", exclude_none=True))
        dumped.setdefault("resultType", "complete")
        dumped["_meta"] = {types.SERVER_INFO_META_KEY: server.server_info_stamp}
        out = json.dumps({"jsonrpc": "2.0", "id": rpc.id, "result": dumped}, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(out)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return answer


async def _layer(requests: int, rounds: int) -> None:
    import json

    from mcp.server._otel import OpenTelemetryMiddleware
    from mcp.server.transport_security import TransportSecuritySettings

    from engine.mcp._gateway import WhenTracing
    from engine.mcp._http import answering_errors

    settings = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"],
                                         allowed_origins=["http://127.0.0.1:*"])
    before, after = _layer_server(), _layer_server()
    after.middleware[:] = [WhenTracing(m) if isinstance(m, OpenTelemetryMiddleware) else m for m in after.middleware]
    apps = [server.streamable_http_app(streamable_http_path="/mcp", transport_security=settings, host="127.0.0.1")
            for server in (before, after)]
    direct = answering_errors(after.session_manager.handle_request)
    row = _checks_in_a_row(after, settings)
    modern_meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                   "io.modelcontextprotocol/clientCapabilities": {}}
    call_2026 = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "double", "arguments": {"x": 21}, "_meta": modern_meta}}).encode()
    headers_2026 = [*_LAYER_HEADERS, (b"mcp-protocol-version", b"2026-07-28"), (b"mcp-method", b"tools/call"),
                    (b"mcp-name", b"double")]
    call_2025 = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                            "params": {"name": "double", "arguments": {"x": 21}}}).encode()
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "layer", "version": "1"}}}).encode()
    initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    async with trio.open_nursery() as nursery:
        stops = []
        for app in apps:  # each app's lifespan runs its session manager
            to_app, app_reads = trio.open_memory_channel[dict[str, Any]](2)
            app_writes, from_app = trio.open_memory_channel[dict[str, Any]](2)
            nursery.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                               app_reads.receive, app_writes.send)
            await to_app.send({"type": "lifespan.startup"})
            await from_app.receive()
            stops.append((to_app, from_app))
        sessions = []
        for way in (apps[0], direct):
            opened = await _exchange(way, _LAYER_HEADERS, init)
            session = [(b"mcp-session-id", dict(opened["headers"])[b"mcp-session-id"]),
                       (b"mcp-protocol-version", b"2025-11-25")]
            await _exchange(way, [*_LAYER_HEADERS, *session], initialized)
            sessions.append(session)
        cases = {
            "2025-11-25 session, SDK app + OTel span": (apps[0], [*_LAYER_HEADERS, *sessions[0]], call_2025),
            "2025-11-25 session, direct (ours now)": (direct, [*_LAYER_HEADERS, *sessions[1]], call_2025),
            "2026-07-28, SDK app + OTel span": (apps[0], headers_2026, call_2026),
            "2026-07-28, direct (ours now)": (direct, headers_2026, call_2026),
            "2026-07-28, the SDK's checks in a row": (row, headers_2026, call_2026),
        }
        sdk_answer = await _exchange(direct, headers_2026, call_2026)
        row_answer = await _exchange(row, headers_2026, call_2026)
        same = {k: v for k, v in sdk_answer.items() if k != "headers"} == \
            {k: v for k, v in row_answer.items() if k != "headers"}
        best = dict.fromkeys(cases, float("inf"))
        for _round in range(rounds):
            for label, (app, headers, body) in cases.items():
                began = time.thread_time()
                for _ in range(requests):
                    await _exchange(app, headers, body)
                best[label] = min(best[label], (time.thread_time() - began) / requests)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'one tools/call through':44} {'CPU us':>8}   (best of {rounds} x {requests})")
        for label, seconds in best.items():
            print(f"{label:44} {seconds * 1e6:8.1f}")
        print(f"the checks-in-a-row answer equals the SDK's (status, body): {same}")
        for to_app, from_app in stops:
            await to_app.send({"type": "lifespan.shutdown"})
            await from_app.receive()


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


def _start(argv: list[str], env: dict[str, str], prefix: str,
           cwd: Path = REPO) -> tuple[subprocess.Popen[str], str, list[str]]:  # fmt: skip
    """The process, the line starting with ``prefix`` (prefix removed), and the lines before it.

    ``python -m engine`` imports the ``engine`` of ``cwd`` first, whatever PYTHONPATH says."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    before = []
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"{argv[2:4]} did not start")
        if line.startswith(prefix):
            return process, line.strip().removeprefix(prefix), before
        before.append(line.strip())


# --- this checkout against another (--vs) -----------------------------------------------------


def _ticks_and_loop_ns(pid: int) -> tuple[int, int]:
    """A server's CPU: the process's (all its threads, clock ticks) and its event loop thread's (ns)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat", "rb") as handle:
        loop_ns = int(handle.read().split()[0])
    return int(fields[11]) + int(fields[12]), loop_ns


async def _alternating(servers: list[tuple[str, int, str]], token: str, mode: str, calls: int,
                       found: dict[tuple[str, str], list[tuple[float, float, float]]]) -> None:  # fmt: skip
    """One session per server; calls alternate between them, so both see the same load."""
    from contextlib import AsyncExitStack

    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with AsyncExitStack() as stack:
        clients = []
        for _label, _pid, url in servers:
            http = await stack.enter_async_context(create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))
            client = await stack.enter_async_context(Client(streamable_http_client(url, http_client=http), mode=mode))
            await client.list_tools()
            for i in range(10):  # warm: the pool started, the caches filled
                await client.call_tool("calculator", {"expression": f"{i}+1"})
            clients.append(client)
        latencies: list[list[float]] = [[] for _ in servers]
        before = [_ticks_and_loop_ns(pid) for _label, pid, _url in servers]
        for i in range(calls):
            for k, client in enumerate(clients):
                began = time.perf_counter()
                result = await client.call_tool("calculator", {"expression": f"{i}+1"})
                latencies[k].append(time.perf_counter() - began)
                if result.is_error or result.structured_content["result"] != i + 1:
                    raise SystemExit(f"{servers[k][0]}: unexpected result {result}")
        for k, (label, pid, _url) in enumerate(servers):
            ticks, loop_ns = _ticks_and_loop_ns(pid)
            found.setdefault((mode, label), []).append((
                (ticks - before[k][0]) * 1e3 / os.sysconf("SC_CLK_TCK") / calls,
                (loop_ns - before[k][1]) / 1e6 / calls, _percentile(latencies[k], 0.5) * 1e3))


def _vs(other: Path, calls: int, rounds: int) -> None:
    """Ours from this checkout and from ``other``, over both MCP revisions, calls alternating."""
    import statistics

    import jwt

    base = Path(tempfile.mkdtemp(prefix="bench-mcp-vs-", dir="/tmp"))
    os.chmod(base, 0o711)
    processes: list[subprocess.Popen[str]] = []
    try:
        servers = []
        for label, tree in (("this checkout", REPO), (f"other: {other}", other)):
            config = base / label.split(":")[0].replace(" ", "-") / "config"
            for name in ("agents.d", "tools.d", "resources.d", "policies"):
                shutil.copytree(tree / name, config / name)
            env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET, "PYTHONPATH": str(tree)}
            process, url, _ = _start(
                [sys.executable, "-m", "engine", "serve", "--port", "0", "--mcp-port", "0", "--config", str(config),
                 "--state-dir", str(config.parent / "state")], env, "mcp: ", cwd=tree)  # fmt: skip
            processes.append(process)
            servers.append((label, process.pid, url))
        token = jwt.encode({"sub": "bench", "roles": ["user"], "exp": int(time.time()) + 3600}, SECRET, "HS256")
        print(f"{calls} calls per server, mode and round, {rounds} round(s); "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        found: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _round in range(rounds):
            for mode in ("legacy", "2026-07-28"):
                # Who goes first alternates too.
                order = servers if _round % 2 == 0 else servers[::-1]
                trio.run(_alternating, order, token, mode, calls, found)
        print(f"{'mode':11} {'server':50} {'CPU ms/call':>12} {'loop ms/call':>13} {'p50 ms':>8}   (medians)")
        for (mode, label), runs in sorted(found.items()):
            cpu, loop, p50 = (statistics.median(run[i] for run in runs) for i in range(3))
            print(f"{mode:11} {label[:50]:50} {cpu:12.2f} {loop:13.3f} {p50:8.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        _stop(processes, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per variant (default 200)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent sessions (default 20)")
    parser.add_argument("--mode", default="legacy", help="legacy (2025-11-25 sessions) or 2026-07-28 (stateless)")
    parser.add_argument("--tool", choices=("calculator", "echo"), default="calculator",
                        help="ours: calculator (a Python tool: a sandboxed interpreter per call) or echo "
                        "(/bin/cat in the sandbox); the SDK's server serves both names in-process")
    parser.add_argument("--layer", action="store_true", help="the SDK's HTTP layer alone, in-process (see above)")
    parser.add_argument("--requests", type=int, default=400, help="--layer: requests per round (default 400)")
    parser.add_argument("--rounds", type=int, default=7, help="--layer: rounds, the best is printed (default 7)")
    parser.add_argument("--vs", type=Path, metavar="OTHER_CHECKOUT",
                        help="ours from this checkout against ours from another (see above)")
    parser.add_argument("--serve-sdk", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sdk:
        serve_sdk()
        return
    if args.layer:
        trio.run(_layer, args.requests, args.rounds)
        return
    if args.vs is not None:
        _vs(args.vs.resolve(), args.calls, args.rounds)
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
        _stop(processes, base)


if __name__ == "__main__":
    main()
