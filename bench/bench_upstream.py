"""MCP servers as tools: first-call and warm-call latency of each lifecycle.

Runs the test MCP server of the suite (tests/data/upstream/server.py, on the system
interpreter with the SDK copied where the sandbox user can read it) in real sandboxes,
through `engine.upstream.Upstreams` as the server runs it, and calls its `echo` tool:

- first call: made as soon as the runtime starts (per_call: a start per call anyway;
  shared: waits for the one server; single_use: waits for the first pre-started one);
- warm calls: shared: back to back on the running server; single_use: each call made
  once a pre-started sandbox is ready ("pool ready"), and back to back ("pool drained",
  where calls outrun the refills); per_call: every call starts its server.

    PYTHONPATH=$PWD python bench/bench_upstream.py [--calls N]

Prints medians and worst cases in milliseconds; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import load_config  # noqa: E402
from engine.config.converter import converter  # noqa: E402
from engine.config.model import McpServerFile  # noqa: E402
from engine.upstream import Upstreams  # noqa: E402
from engine.upstream._lifecycle import SingleUsePool  # noqa: E402
from engine.upstream.pin import list_definitions, write_pins  # noqa: E402
from tests.upstream.env import SYSTEM_PYTHON, UpstreamEnv, build_upstream_env  # noqa: E402

TOOLS = "    echo: {permission_level: 0}\n"


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"p50 {statistics.median(ordered) * 1000:8.1f}  max {ordered[-1] * 1000:8.1f}  (n={len(ordered)})"


async def _measure(base: Path, lifecycle: str, calls: int) -> dict[str, list[float]]:
    env = UpstreamEnv(base / "env", base / "env" / "site", base / "env" / "server.py", SYSTEM_PYTHON)
    root = base / f"config-{lifecycle}"
    (root / "tools.d").mkdir(parents=True)
    (root / "policies").mkdir()
    text = env.tool_file(f"bench-{lifecycle}", lifecycle=lifecycle, tools=TOOLS, pool_size=2)
    definitions = await list_definitions(converter.structure(yaml.safe_load(text), McpServerFile))
    (root / "tools.d" / "up.yaml").write_text(write_pins(text, {"echo": definitions["echo"]}))
    config = load_config(root)
    tool = config.tools["up_echo"]
    work = base / "work"
    work.mkdir(exist_ok=True, mode=0o711)
    upstreams = Upstreams(workspace=work, work_root=work)
    found: dict[str, list[float]] = {"first": [], "warm": [], "drained": []}

    async def call() -> float:
        started = time.perf_counter()
        result = await upstreams.call(tool, {"text": "x"})
        if result.status != "ok":
            raise RuntimeError(result.message)
        return time.perf_counter() - started

    async with trio.open_nursery() as nursery:
        await nursery.start(upstreams.run, config)
        found["first"].append(await call())
        runner = upstreams.runner_for(tool.upstream)  # type: ignore[arg-type]
        for _ in range(calls):
            if isinstance(runner, SingleUsePool):
                # "Pool ready": wait (outside the timing) until a sandbox is started.
                while runner._receive.statistics().current_buffer_used == 0:  # noqa: ASYNC110 (no event)
                    await trio.sleep(0.01)
            found["warm"].append(await call())
        if isinstance(runner, SingleUsePool):
            found["drained"] = [await call() for _ in range(calls)]
        nursery.cancel_scope.cancel()
    return found


def _prepare(base: Path) -> None:
    base.chmod(0o755)  # the sandbox user reaches the server and its files below
    (base / "env").mkdir()
    build_upstream_env(base / "env")


async def main(calls: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="sconnect-bench-upstream-", dir="/tmp"))
    try:
        await trio.to_thread.run_sync(_prepare, base)
        print(f"echo through the test MCP server, {calls} warm calls per lifecycle (ms)")
        for lifecycle in ("per_call", "shared", "single_use"):
            found = await _measure(base, lifecycle, calls)
            print(f"{lifecycle:<11} first call   {_ms(found['first'])}")
            label = {"per_call": "each call  ", "shared": "warm call  ", "single_use": "pool ready "}[lifecycle]
            print(f"{lifecycle:<11} {label}  {_ms(found['warm'])}")
            if found["drained"]:
                print(f"{lifecycle:<11} pool drained {_ms(found['drained'])}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    trio.run(main, parser.parse_args().calls)
