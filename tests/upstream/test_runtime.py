"""engine.upstream without a server around it: `call_tool` (what `toolrun.run_tool` uses)
starts the MCP server for the call alone when no `Upstreams` is current, and a Trio
cancellation of the call kills the sandbox before it returns.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from engine.config import load_config
from engine.toolrun import run_tool
from tests.conftest import processes_with
from tests.upstream.conftest import MakeConfig
from tests.upstream.env import UpstreamEnv

pytestmark = pytest.mark.slow


async def test_a_call_without_a_server_and_its_cancellation(
    mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str, tmp_path: Path
) -> None:
    config = load_config(mcp_config(lifecycle="shared"))
    work = Path("/tmp") / f"sconnect-{tag}"
    work.mkdir(mode=0o711)
    try:
        with trio.fail_after(60):
            result = await run_tool(
                config.tools["adder"], {"a": 1, "b": 2}, workspace=work, work_root=work, subject="alice"
            )
            assert (result.status, result.output) == ("ok", {"sum": 3})
            assert result.backend.startswith("mcp+")
            with trio.move_on_after(60) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        functools.partial(run_tool, workspace=work, work_root=work, subject="alice"),
                        config.tools["up_hang"],
                        {},
                    )
                    calls = upstream_env.calls(tag)
                    # Polling a file the server writes: there is no event to wait on.
                    while "hang" not in (calls.read_text() if calls.exists() else ""):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                    scope.cancel()
            assert scope.cancelled_caught
            # Killed before the cancellation went on: nothing to wait for.
            assert processes_with(tag) == []
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
