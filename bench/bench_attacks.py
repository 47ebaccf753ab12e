"""Another client's round trip while one client attacks the event loop (issue 11, item 2).

Starts ``sconnect serve`` on the shipped configuration as a separate process. For each
attack, one client repeats it without pause while another measures ``tool_list`` round
trips; prints the victim's median, p99 and worst round trip, and how many attack frames
the server answered meanwhile. Target: the victim's worst round trip under 100 ms.

    python bench/bench_attacks.py [--samples 200]

Attacks: the assistant's rule that backtracks under Python's ``re`` ("list " x 13,000);
an offered tool whose ``pattern`` is ``^(a+)+$`` called with 30 a's and '!'; a 600 KiB
offered schema; ``uniqueItems`` over 10,000 objects; a schema check that runs into its
deadline; arguments nested 600 deep; a frame of 300,000 empty arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engine.client import Client, open_client
from engine.protocol import OfferedTool, new_id

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


def _offer(parameters: dict[str, Any]) -> OfferedTool:
    return OfferedTool(name="get_location", description="offered by the attacker", parameters=parameters)


async def _raw_and_reply(client: Client, payload: dict[str, Any], kind: str = "tool_call") -> None:
    """Send one frame and wait for its answer (a result or an error naming its id)."""
    frame_id = new_id()
    await client.send_raw(json.dumps({"type": kind, "id": frame_id, "payload": payload}))
    async for event in client.events():
        if getattr(event, "reply_to", None) == frame_id and type(event).__name__ in ("AgentResult", "ErrorFrame"):
            return


async def _raw_refused(client: Client, text: str) -> None:
    """Send one frame refused before it has an id; wait for the error."""
    await client.send_raw(text)
    async for event in client.events():
        if type(event).__name__ == "ErrorFrame":
            return


def _attacks(client: Client, sid: str) -> dict[str, Callable[[], Awaitable[object]]]:
    deep: object = "x"
    for _ in range(600):
        deep = [deep]
    branches = [{"const": value} for value in range(200)]
    return {
        "rule backtracking ('list ' x 13000)": lambda: client.converse(sid, "list " * 13_000),
        "pattern ^(a+)+$ on 30 a's and '!'": lambda: _raw_and_reply(
            client, {"name": "get_location", "arguments": {"s": "a" * 30 + "!"}}),
        "600 KiB offered schema": lambda: _raw_and_reply(
            client, {"tools": [{"name": "big", "description": "x", "parameters": {
                "type": "object", "description": "x" * 600 * 1024}}]}, "tool_list"),
        "uniqueItems over 10,000 objects": lambda: _raw_and_reply(
            client, {"name": "get_location", "arguments": {"v": [{"n": i} for i in range(10_000)]}}),
        "schema check past its deadline": lambda: _raw_and_reply(
            client, {"name": "get_location", "arguments": {"w": [199] * 40_000}}),
        "arguments nested 600 deep": lambda: _raw_and_reply(
            client, {"name": "get_location", "arguments": {"d": deep}}),
        "300,000 empty arrays in one frame": lambda: _raw_refused(client, "[" + "[]," * 300_000 + "[]]"),
    } | {"_schema": lambda: client.offer_tools([_offer({"type": "object", "properties": {
        "s": {"type": "string", "pattern": "^(a+)+$"},
        "v": {"type": "array", "uniqueItems": True, "maxItems": 5},
        "w": {"type": "array", "items": {"anyOf": branches}},
    }})])}


async def _victim(victim: Client, samples: int) -> list[float]:
    taken = []
    for _ in range(samples):
        started = time.perf_counter()
        await victim.list_tools()
        taken.append((time.perf_counter() - started) * 1000)
    return taken


def _report(label: str, taken: list[float], attacks: int) -> None:
    ordered = sorted(taken)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{label:<38} median {statistics.median(ordered):6.2f} ms  p99 {p99:7.2f} ms  "
          f"max {ordered[-1]:7.2f} ms   ({len(taken)} round trips, {attacks} attacks answered)", flush=True)


async def attack_forever(url: str, token: str, label: str) -> None:
    """The attacker, in its own process (its client's work must not slow the victim's)."""
    async with open_client(url, token) as attacker:
        sid = (await attacker.start_session("assistant")).session_id
        attacks = _attacks(attacker, sid)
        await attacks.pop("_schema")()
        await attacker.list_tools()
        print("ready", flush=True)
        while True:
            await attacks[label]()
            print("answered", flush=True)


async def main(samples: int) -> None:
    state = tempfile.mkdtemp(prefix="sconnect-bench-", dir="/tmp")
    os.chmod(state, 0o711)
    env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET}
    server = await trio.to_thread.run_sync(lambda: subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--state-dir", f"{state}/state"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    ))
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()

        def token(sub: str) -> str:
            return subprocess.run(
                [sys.executable, "-m", "engine", "token", "issue", "--sub", sub, "--role", "user",
                 "--state-dir", f"{state}/state"], env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()

        labels = [label for label in _attacks(None, "") if not label.startswith("_")]  # type: ignore[arg-type]
        async with open_client(url, token("victim")) as victim:
            _report("no attack", await _victim(victim, samples), 0)
            for label in labels:
                argv = [sys.executable, __file__, "--attack", label, "--url", url, "--token", token("attacker")]
                attacker = await trio.to_thread.run_sync(lambda argv=argv: subprocess.Popen(  # type: ignore[misc]
                    argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                ))
                assert attacker.stdout is not None
                assert (await trio.to_thread.run_sync(attacker.stdout.readline)).strip() == "ready"
                try:
                    taken = await _victim(victim, samples)
                finally:
                    attacker.terminate()
                    output, _ = await trio.to_thread.run_sync(attacker.communicate)
                _report(label, taken, output.count("answered"))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--attack", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.attack:
        trio.run(attack_forever, options.url, options.token, options.attack)
    else:
        trio.run(main, options.samples)
