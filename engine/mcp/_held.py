"""Calls an MCP client waits for, held open up to a budget, that a retry can attach to.

MCP clients give up on a request after a minute or so (the TypeScript SDK's default
is 60 s), while an admin's approval can take longer.  So a ``tools/call`` that is
still waiting (for an approval, or for a slow tool) when its budget runs out is
answered with a readable "call again" result, and the work itself goes on in the
registry's nursery.  A later call by the same subject with the same tool and the
same arguments (the same :data:`Key`) attaches to it and gets its outcome; the
outcome is handed out exactly once, then forgotten.

Cancellation: a waiter that is cancelled (the client cancelled the request, or went
away) cancels the work too: its sandbox is killed, its pending approval closed.  A
waiter whose budget ran out detaches without cancelling anything.

Bounds: at most ``max_detached`` detached calls are remembered per subject (the first
part of the key), so one caller cannot push out another's; past it that subject's
oldest finished ones are forgotten first, then its oldest still waiting are cancelled.
A finished outcome nobody claims is forgotten after ``keep_s``.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")
# (subject, tool name, canonical JSON of the arguments)
Key = tuple[str, str, str]


class Phase(enum.Enum):
    RUNNING = "running"
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    DONE = "done"


@attrs.define(eq=False)
class HeldCall(Generic[T]):
    """One call's work, whoever waits for it now."""

    key: Key
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    finished: trio.Event = attrs.field(factory=trio.Event)
    # Set by the work as it goes (from the action events of the call).
    action_id: str | None = None
    phase: Phase = Phase.RUNNING
    approver: str | None = None
    # Set when the action starts waiting for a person's answer.
    approval_requested: trio.Event = attrs.field(factory=trio.Event)
    # Set (then replaced) when it finishes or asks for an approval: what a waiter waits on.
    changed: trio.Event = attrs.field(factory=trio.Event)
    # Whether a request is waiting for it right now (only a detached call can be attached to).
    attached: bool = True
    started_at: float = attrs.field(factory=trio.current_time)
    finished_at: float | None = None
    result: T | None = None
    error: BaseException | None = None

    def ask_approval(self, approver: str) -> None:
        """The action now waits for ``approver``'s answer (``user`` or an admin)."""
        self.phase = Phase.WAITING_FOR_APPROVAL
        self.approver = approver
        self.approval_requested.set()
        self.changed.set()


@attrs.frozen
class StillWaiting:
    """What a waiter gets when its budget ran out before the work finished."""

    action_id: str | None
    phase: Phase
    approver: str | None = None


@attrs.define(eq=False)
class HeldCalls(Generic[T]):
    nursery: trio.Nursery
    budget_s: float
    keepalive_s: float = 10.0
    keep_s: float = 600.0
    max_detached: int = 64
    _calls: dict[Key, HeldCall[T]] = attrs.field(factory=dict)

    def attachable(self, key: Key) -> HeldCall[T] | None:
        """The detached call with this key, if a retry may attach to it."""
        self._forget_stale()
        call = self._calls.get(key)
        return call if call is not None and not call.attached else None

    async def run(
        self,
        key: Key,
        work: Callable[[HeldCall[T]], Awaitable[T]],
        *,
        keepalive: Callable[[HeldCall[T], int], Awaitable[None]],
        alongside: Callable[[HeldCall[T]], Awaitable[bool | None]] | None = None,
    ) -> T | StillWaiting:
        """Attach to the detached call with ``key``, else start ``work``; wait up to the budget.

        ``keepalive(call, n)`` runs every ``keepalive_s`` while waiting (progress
        notifications keep the client's request alive); ``alongside(call)`` runs,
        once the action asks for an approval, while this request waits (an in-band
        approval) and is cancelled when it stops waiting; when it returns True this
        request stops waiting at once (detached, as if its budget had run out).
        Errors of the work are raised to the waiter that collects them.

        Most calls never wait for anybody: until an approval is asked for, waiting
        is a wait on one event, with no task of its own.
        """
        call = self.attachable(key)
        if call is not None:
            call.attached = True
        else:
            call = HeldCall[T](key)
            if key not in self._calls:
                # A second identical call while the first is still attached runs on its own.
                self._calls[key] = call
            self.nursery.start_soon(self._work, call, work)
        waiting = trio.CancelScope(deadline=trio.current_time() + self.budget_s)
        beats = [0]

        async def side(alongside: Callable[[HeldCall[T]], Awaitable[bool | None]]) -> None:
            if await alongside(call):
                waiting.cancel()

        try:
            with waiting:
                await self._wait(call, keepalive, beats, until_approval=alongside is not None)
                if alongside is not None and not call.finished.is_set():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(side, alongside)
                        await self._wait(call, keepalive, beats, until_approval=False)
                        nursery.cancel_scope.cancel()
        except BaseException:
            # The client cancelled or left: the work goes too (sandbox killed, approval closed).
            call.scope.cancel()
            self._drop(call)
            raise
        if not call.finished.is_set():
            call.attached = False
            self._forget_stale()
            return StillWaiting(call.action_id, call.phase, call.approver)
        self._drop(call)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    async def _wait(
        self, call: HeldCall[T], keepalive: Callable[[HeldCall[T], int], Awaitable[None]], beats: list[int],
        *, until_approval: bool,
    ) -> None:
        """Until the call finishes (or asks for an approval), with a keep-alive every ``keepalive_s``."""
        while not call.finished.is_set() and not (until_approval and call.approval_requested.is_set()):
            with trio.move_on_after(self.keepalive_s):
                await call.changed.wait()
            if call.changed.is_set():
                call.changed = trio.Event()
            elif not call.finished.is_set():
                beats[0] += 1
                await keepalive(call, beats[0])

    async def _work(self, call: HeldCall[T], work: Callable[[HeldCall[T]], Awaitable[T]]) -> None:
        try:
            with call.scope:
                call.result = await work(call)
        except Exception as exc:
            call.error = exc
        finally:
            call.phase = Phase.DONE
            call.finished_at = trio.current_time()
            call.finished.set()
            call.changed.set()

    def _drop(self, call: HeldCall[T]) -> None:
        if self._calls.get(call.key) is call:
            del self._calls[call.key]

    def _forget_stale(self) -> None:
        now = trio.current_time()
        for key, call in list(self._calls.items()):
            if not call.attached and call.finished_at is not None and now - call.finished_at > self.keep_s:
                del self._calls[key]
        by_subject: dict[str, list[HeldCall[T]]] = {}
        for call in self._calls.values():
            if not call.attached:
                by_subject.setdefault(call.key[0], []).append(call)
        for detached in by_subject.values():
            if len(detached) > self.max_detached:
                # Finished ones first (oldest first), then the oldest still running: they are cancelled.
                detached.sort(key=lambda c: (c.finished_at is None, c.finished_at or c.started_at))
                for call in detached[: len(detached) - self.max_detached]:
                    call.scope.cancel()
                    self._drop(call)


def describe(waiting: StillWaiting) -> str:
    """The readable answer to a call whose budget ran out."""
    action = f"action {waiting.action_id}" if waiting.action_id else "the action"
    if waiting.phase is Phase.WAITING_FOR_APPROVAL:
        who = "your approval" if waiting.approver == "user" else "an admin's approval"
        return f"waiting for {who}, {action}; call again with the same arguments to get its outcome"
    return f"still running, {action}; call again with the same arguments to get its outcome"

