"""A long call must not die at 10 s (SANDBOX-NOTES trap 5).

trio.run_process forks from a worker thread; with --die-with-parent the sandbox gets
PR_SET_PDEATHSIG from that thread and dies when the thread idles out after 10 s. The
sandbox is spawned from the Trio thread instead; this proves it on both backends at once.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

import sandbox


@pytest.mark.slow
async def test_twelve_second_call_is_not_killed_at_ten(runner_for: Any) -> None:
    results: dict[str, sandbox.Result] = {}

    async def one(isolation: str) -> None:
        runner = runner_for(isolation)
        results[isolation] = await runner.run(argv=("/bin/sleep", "12"), timeout_s=30)

    # Give trio's thread cache a worker thread that will idle out during the call.
    await trio.to_thread.run_sync(lambda: None)
    async with trio.open_nursery() as nursery:
        for isolation in ("namespaces", "process"):
            nursery.start_soon(functools.partial(one, isolation))
    for isolation, result in results.items():
        assert result.status == "ok", (isolation, result)
        assert result.exit_code == 0
        assert result.wall_time_s >= 12
