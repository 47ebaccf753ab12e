"""A call must outlive the idle-out of trio's worker threads (SANDBOX-NOTES trap 5).

trio.run_process forks from a worker thread; with --die-with-parent the sandbox gets
PR_SET_PDEATHSIG from that thread and dies when the thread idles out (after 10 s in
trio). The sandbox is spawned from the Trio thread instead; this proves it on both
backends at once. trio's idle timeout is lowered to 1 s for the test (its thread cache
reads the module constant at each wait), so a 3-second call spans an idle-out without
the test taking 12 seconds.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

import sandbox


@pytest.mark.slow
async def test_a_call_outlives_the_idle_out_of_a_worker_thread(
    runner_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio._core import _thread_cache

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 1)
    results: dict[str, sandbox.Result] = {}

    async def one(isolation: str) -> None:
        runner = runner_for(isolation)
        results[isolation] = await runner.run(argv=("/bin/sleep", "3"), timeout_s=30)

    # Give trio's thread cache a worker thread that will idle out during the call.
    await trio.to_thread.run_sync(lambda: None)
    async with trio.open_nursery() as nursery:
        for isolation in ("namespaces", "process"):
            nursery.start_soon(functools.partial(one, isolation))
    for isolation, result in results.items():
        assert result.status == "ok", (isolation, result)
        assert result.exit_code == 0
        assert result.wall_time_s >= 3
