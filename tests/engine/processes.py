"""Waiting for a tool's process to appear in /proc, or to be gone, by a marker in its argv.

Polling /proc is the only way to see another process tree come and go: there is no event
to wait on. Both waits are bounded. ``until_gone`` allows a moment after the server has
reported the tool dead, because the kernel tears a killed sandbox's pid namespace down
after its outer process has been reaped (issue 13, item 2).
"""

from __future__ import annotations

import os

import trio

from tests.conftest import processes_with


def unique_marker(prefix: str) -> str:
    """A marker no other test run on this machine uses (suites run concurrently)."""
    return f"{prefix}.{os.getpid():08d}"


async def until_running(marker: str) -> None:
    with trio.fail_after(10):
        while not processes_with(marker):  # noqa: ASYNC110 (polling /proc: there is no event to wait on)
            await trio.sleep(0.05)


async def until_gone(marker: str) -> None:
    with trio.fail_after(5):
        while processes_with(marker):  # noqa: ASYNC110 (polling /proc: there is no event to wait on)
            await trio.sleep(0.02)
