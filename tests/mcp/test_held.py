"""Held calls on trio's mock clock: budget, keep-alives, attach, exactly once, cancellation, bounds.

No server here: the work is a function that waits for an event the test sets, so each
test decides when "the admin approves".
"""

from __future__ import annotations

import pytest
import trio

from engine.mcp._held import HeldCall, HeldCalls, Phase, StillWaiting, describe

KEY = ("alice", "echo", '{"text":"x"}')


async def _nothing(call: HeldCall[str], beat: int) -> None:
    pass


async def test_past_the_budget_a_retry_attaches_and_gets_the_outcome_once(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    held: HeldCalls[str] = HeldCalls(nursery, budget_s=50, keepalive_s=10)
    approved = trio.Event()
    started = 0
    beats: list[int] = []

    async def work(call: HeldCall[str]) -> str:
        nonlocal started
        started += 1
        call.action_id, call.phase, call.approver = f"a{started}", Phase.WAITING_FOR_APPROVAL, "admin"
        await approved.wait()
        return f"ran {started}"

    async def beat(call: HeldCall[str], n: int) -> None:
        beats.append(n)

    first = await held.run(KEY, work, keepalive=beat)
    assert first == StillWaiting("a1", Phase.WAITING_FOR_APPROVAL, "admin")
    assert beats == [1, 2, 3, 4] and "waiting for an admin's approval, action a1" in describe(first)
    approved.set()
    await trio.sleep(1)
    assert await held.run(KEY, work, keepalive=_nothing) == "ran 1"
    # Exactly once: the next identical call is new work.
    assert await held.run(KEY, work, keepalive=_nothing) == "ran 2"


async def test_another_subject_never_attaches(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    held: HeldCalls[str] = HeldCalls(nursery, budget_s=5)
    never = trio.Event()

    async def work(call: HeldCall[str]) -> str:
        await never.wait()
        return "x"

    assert isinstance(await held.run(KEY, work, keepalive=_nothing), StillWaiting)
    assert held.attachable(("mallory", *KEY[1:])) is None and held.attachable(KEY) is not None


async def test_a_cancelled_waiter_cancels_the_work(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    held: HeldCalls[str] = HeldCalls(nursery, budget_s=50)
    cancelled = trio.Event()

    async def work(call: HeldCall[str]) -> str:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        return "never"  # pragma: no cover

    with trio.move_on_after(5):
        await held.run(KEY, work, keepalive=_nothing)
    await cancelled.wait()
    assert held.attachable(KEY) is None


async def test_the_work_s_error_reaches_the_waiter(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    held: HeldCalls[str] = HeldCalls(nursery, budget_s=5)

    async def work(call: HeldCall[str]) -> str:
        raise RuntimeError("tool host on fire")

    with pytest.raises(RuntimeError, match="on fire"):
        await held.run(KEY, work, keepalive=_nothing)


async def test_detached_calls_are_bounded_per_subject(nursery: trio.Nursery, autojump_clock: trio.abc.Clock) -> None:
    held: HeldCalls[str] = HeldCalls(nursery, budget_s=1, max_detached=3)
    never = trio.Event()

    async def work(call: HeldCall[str]) -> str:
        await never.wait()
        return "x"

    for i in range(5):
        await held.run(("mallory", "echo", str(i)), work, keepalive=_nothing)
    await held.run(KEY, work, keepalive=_nothing)
    assert held.attachable(KEY) is not None  # alice keeps hers
    kept = [i for i in range(5) if held.attachable(("mallory", "echo", str(i))) is not None]
    assert kept == [2, 3, 4]  # mallory's oldest were cancelled and forgotten
