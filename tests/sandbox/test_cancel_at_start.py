"""A call cancelled the moment it starts leaves nothing behind (namespaces backend).

Cancelled before bubblewrap has reported its sandbox's pid 1, the backend used to kill
only bwrap, and the pid 1 it was creating lived on under the host's init: its
parent-death signal does not survive entering the user namespace. The test cancels after
0, 1, 2, ... scheduler checkpoints, so that some cancels land in that window, and then
looks in /proc for anything whose command line carries this call's marker.
"""

from __future__ import annotations

import pytest
import trio

from tests.conftest import processes_with


@pytest.mark.parametrize("checkpoints", range(0, 40, 3))
async def test_cancel_right_after_the_start_leaves_no_process(ns_tool, token: str, checkpoints: int) -> None:  # type: ignore[no-untyped-def]
    from tests.sandbox.conftest import wait_until

    marker = f"cancel-at-start-{token}-{checkpoints}"
    with trio.move_on_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: ns_tool.run(argv=("/bin/sh", "-c", f"sleep 600 # {marker}")))
            for _ in range(checkpoints):
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(lambda: wait_until(lambda: processes_with(marker) == [], bound_s=5)), \
        f"left behind: {processes_with(marker)}"
