"""What a turn of a custom Python agent, and a delegation, cost in the engine (issue 15).

Run by hand: `python bench/bench_agents.py [--turns 200]`. Starts the server in this
process on a temporary copy of the shipped configuration (SQLite state, the audit log
on), adds two agents, and times whole turns from the client's ``user_message`` to its
``agent_response`` over a real WebSocket. Prints p50/p99 per turn for:

- rules (baseline): the weather agent answering its fallback (one model step, no action).
- python, no action: a Python agent that returns a string.
- python, one delegation: a Python agent asking the weather agent for its fallback
  (decision + two audit records + the child's rules turn; no sandbox, no resource read).
- planner (shipped): delegation + resource read + calculator in the sandbox + board post.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.auth import AuthSettings, issue  # noqa: E402
from engine.client import open_client  # noqa: E402
from engine.server import ServerSettings, serve  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECRET = b"bench-secret-0123456789abcdef0123456789abcdef-0123456789abcdef"
AGENTS = {
    "quick": "from engine.agents import BaseAgent\n\nclass Agent(BaseAgent):\n"
             "    async def process_message(self, message, context):\n        return 'done'\n",
    "asker": "from engine.agents import BaseAgent\n\nclass Agent(BaseAgent):\n"
             "    async def process_message(self, message, context):\n"
             "        return (await context.delegate('weather', 'hello')).status\n",
}


def _config(root: Path) -> Path:
    for name in ("agents.d", "tools.d", "resources.d", "policies", "models.d"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name, module in AGENTS.items():
        (root / "agents.d" / f"{name}.py").write_text(module)
        delegates = "delegates: [weather]\n" if name == "asker" else ""
        (root / "agents.d" / f"{name}.yaml").write_text(
            f"name: {name}\ndescription: Bench agent.\npython: {name}:Agent\n{delegates}")
    return root


async def _measure(url: str, token: str, label: str, agent: str, message: str, turns: int) -> None:
    times = []
    async with open_client(url, token) as client:
        sid = (await client.start_session(agent)).session_id
        for _ in range(turns):
            started = time.perf_counter()
            await client.converse(sid, message)
            times.append(time.perf_counter() - started)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:<26} p50 {statistics.median(times) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   ({turns} turns)")


async def main(turns: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sconnect-bench-") as tmp:
        os.chmod(tmp, 0o711)
        config = _config(Path(tmp) / "config")
        settings = ServerSettings(config_dir=config, state_dir=Path(tmp) / "state", auth=AuthSettings(secret=SECRET),
                                  port=0)
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve, settings)
            token = issue(settings.auth, "bench", ["user"], 3600)
            await _measure(handle.websocket, token, "rules (baseline)", "weather", "hello", turns)
            await _measure(handle.websocket, token, "python, no action", "quick", "go", turns)
            await _measure(handle.websocket, token, "python, one delegation", "asker", "go", turns)
            await _measure(handle.websocket, token, "planner (shipped)", "planner", "plan a day in Paris",
                           max(1, turns // 4))
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    trio.run(main, parser.parse_args().turns)
