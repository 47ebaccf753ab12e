"""What one model step costs in the engine, and what a fallback adds, against a local scripted server.

Run by hand: `python bench/bench_models.py [--steps 200]`. A scripted OpenAI-compatible
server (tests/models/scripted.py) answers on 127.0.0.1 with a short streamed text; the
numbers are the engine's side (request building, HTTP, SSE parsing, routing), not a
model's. Prints p50/p99 per step for:

- direct: one named model that answers.
- fallback (refused): `models: [a, b]`, a's port closed (retries: 0), b answers: a fresh
  Routed per step, as a turn's first step pays it.
- fallback (5xx, 2 retries): a answers 503 three times (backoff capped at 1 ms), then b.
- 429 + Retry-After (capped at 1 ms): one 429, then the answer.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.config.model import OpenAIModel  # noqa: E402
from engine.config.units import Seconds  # noqa: E402
from engine.models import Routed, TextDelta, make_model  # noqa: E402
from tests.models import scripted as s  # noqa: E402


def _config(name: str, base_url: str, retries: int = 2) -> OpenAIModel:
    return OpenAIModel(provider="openai", model=name, base_url=base_url, retries=retries,
                       retry_backoff=Seconds(0.001), retry_max_wait=Seconds(0.001), connect_timeout=Seconds(2))


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def _measure(label: str, steps: int, make: Callable[[], Routed], prepare: Callable[[], None]) -> None:
    times = []
    for _ in range(steps):
        prepare()
        model = make()
        started = time.perf_counter()
        text = [item.text async for item in model.stream([{"role": "user", "content": "hi"}], [])
                if isinstance(item, TextDelta)]
        times.append(time.perf_counter() - started)
        assert "".join(text) == "hello there friend", text
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:<28} p50 {statistics.median(times) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   ({steps} steps)")


async def main(steps: int) -> None:
    async with trio.open_nursery() as nursery:
        server: s.ScriptedServer = await nursery.start(s.ScriptedServer().serve)
        url = server.base_url
        answer = [s.text("hello there friend")]

        def reset(**scripts: list[s.Reply]) -> Callable[[], None]:
            return lambda: [server.script(name, replies) for name, replies in {"b": answer, **scripts}.items()]

        await _measure("direct", steps, lambda: Routed({"b": make_model(_config("b", url))}), reset())
        down = _closed_url()
        await _measure("fallback (refused)", steps, lambda: Routed(
            {"a": make_model(_config("a", down, retries=0)), "b": make_model(_config("b", url))}), reset())
        await _measure("fallback (5xx, 2 retries)", steps, lambda: Routed(
            {"a": make_model(_config("a", url)), "b": make_model(_config("b", url))}),
            reset(a=[s.status(503)]))
        await _measure("429 + Retry-After", steps, lambda: Routed({"b": make_model(_config("b", url))}),
                       reset(b=[s.status(429, Retry_After="5"), *answer]))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    logging.disable(logging.WARNING)  # each fallback logs a warning: not what is measured
    trio.run(main, parser.parse_args().steps)
