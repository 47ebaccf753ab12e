"""The pool behind a real server: a WebSocket call of a `pool` tool, and nothing left after.

- test_pool_tool_through_the_server_and_nothing_outlives_it: the shipped calculator
  (`isolation: pool`), marked in a private copy of the configuration, is called through a real
  server and WebSocket client (policy, audit, sandbox); its result comes from the pool
  backend; while the server runs its pool sandbox exists (found by a marker in the
  tool's environment), and once the server has stopped no process carries the marker.
"""

# ruff: noqa: F811  (fixtures)
from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import sandbox
from engine.auth import AuthSettings, issue
from engine.client import open_client
from engine.server import ServerSettings, serve
from tests.engine.conftest import SECRET, copy_example_config, state_dir  # noqa: F401
from tests.sandbox.conftest import TOKEN_VAR, alive, processes_with, wait_until

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)


async def test_pool_tool_through_the_server_and_nothing_outlives_it(tmp_path: Path, state_dir: Path) -> None:
    marker = os.urandom(8).hex()
    config = copy_example_config(tmp_path / "config")
    calculator = config / "tools.d" / "calculator.yaml"
    text = calculator.read_text()
    assert "sandbox:\n  isolation: pool" in text  # as shipped
    marked = f"sandbox:\n  env: {{{TOKEN_VAR}: '{marker}'}}\n"
    calculator.write_text(text.replace("sandbox:\n", marked, 1))
    settings = ServerSettings(config_dir=config, state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0)

    def live() -> list[int]:
        return [pid for pid in processes_with(marker) if alive(pid)]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(serve, settings)
            async with open_client(handle.websocket, issue(settings.auth, "alice", ["user"], 600)) as client:
                for expression, value in (("6*7", 42), ("2^10", 1024)):
                    result = await client.call_tool("calculator", {"expression": expression})
                    assert str(result.status) == "ok" and result.output["result"] == value, result
            assert live(), "the pool's sandbox should be running while the server is"
            nursery.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(wait_until, lambda: live() == [])
