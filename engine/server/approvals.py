"""Actions waiting for a person: who may answer them, and the answer once given.

A pending action is registered before its ``agent_action`` is sent and waited
on by the task that wants to run it.  Answers come from any connection: the
broker checks the answerer against the action's approver (the requesting user
for level 1; a connected admin other than the requester for level 2) and
refuses double, late and foreign answers with their own error codes.

An approval may ask to be remembered (``remember``): the broker checks it
against what the action allows (:func:`engine.grants.plan`) before the answer
counts, so a ``remember`` that cannot be honoured refuses the whole answer and
the action keeps waiting; the grant itself is made by the waiting task once the
approval is recorded (engine/server/grants.py).

Several instances (PostgreSQL): an :class:`ApprovalBus` carries approvals between them.
:class:`LocalBus` (one instance) is what the broker did alone; ``engine.server.pgbus``
pushes each pending action to the approvers connected to the other instances, lets an
answer given there resume the turn here, and makes the database's conditional UPDATE the
one place where an approval is decided. The broker tells its observers (the bus) when an
action is added and when it is retired; actions another instance waits for are kept here
too (``origin``), so that listing and pushing them to approvers works as for local ones.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

import attrs
import trio

from ..grants import GrantPlan, RememberContext, plan
from ..protocol import AgentAction, AgentControl, ErrorCode, ProtocolError, Remember

if TYPE_CHECKING:
    from ..auth import Principal
    from ..protocol import ServerFrame
    from ..store import Store

ADMIN_ROLE = "admin"
_REMEMBERED = 4096


@attrs.define(eq=False)
class PendingAction:
    frame: AgentAction
    requester: str
    approver: Literal["user", "admin"]
    # A policy rule lets the requester give the admin approval themselves.
    self_approval: bool = False
    # When it expires unanswered, on trio's clock.
    expires_at: float = float("inf")
    status: Literal["pending", "approved", "denied", "expired", "cancelled"] = "pending"
    decided_by: str | None = None
    reason: str | None = None
    event: trio.Event = attrs.field(factory=trio.Event)
    # What an approval of this action may be remembered as (None: nothing), and what the approver asked for.
    remember: RememberContext | None = None
    grant_plan: GrantPlan | None = None
    # The instance whose turn waits for it, when that is another one (engine.server.pgbus).
    origin: str | None = None
    # The decision is already in the store (taken there by the bus): nothing left to record.
    recorded: bool = False

    @property
    def action_id(self) -> str:
        return self.frame.action_id

    def may_answer(self, sub: str, roles: frozenset[str]) -> bool:
        if self.approver == "user":
            return sub == self.requester
        # Nobody approves their own level-2 request unless a policy rule says so.
        return ADMIN_ROLE in roles and (sub != self.requester or self.self_approval)

    def finish(
        self, status: Literal["approved", "denied", "expired", "cancelled"], by: str | None, reason: str | None
    ) -> None:
        self.status, self.decided_by, self.reason = status, by, reason
        self.event.set()


@attrs.define(eq=False)
class ApprovalBroker:
    pending: dict[str, PendingAction] = attrs.field(factory=dict)
    # Recently finished actions, so that a late or second answer gets the right code.
    finished: collections.OrderedDict[str, PendingAction] = attrs.field(factory=collections.OrderedDict)
    # Told ("added" | "retired", action) of every change, synchronously: they must not block.
    observers: list[Callable[[str, PendingAction], None]] = attrs.field(factory=list)

    def add(self, action: PendingAction) -> None:
        self.pending[action.action_id] = action
        for observer in self.observers:
            observer("added", action)

    def waiting_for(self, sub: str, roles: frozenset[str], *, admin_only: bool = True) -> list[PendingAction]:
        """Actions this person could answer now (sent to an approver who connects; listed on request)."""
        return [
            p for p in self.pending.values() if (p.approver == "admin" or not admin_only) and p.may_answer(sub, roles)
        ]

    def close(self, action: PendingAction, status: Literal["expired", "cancelled"], reason: str) -> None:
        if action.status == "pending":
            action.finish(status, None, reason)
        self._retire(action)

    def answer(
        self, action_id: str, approved: bool, sub: str, roles: frozenset[str], reason: str | None, reply_to: str,
        remember: Remember | None = None,
    ) -> PendingAction:
        action = self.pending.get(action_id)
        if action is None:
            done = self.finished.get(action_id)
            if done is None:
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, f"no action {action_id!r} is waiting for approval", reply_to=reply_to
                )
            if done.status == "expired":
                raise ProtocolError(
                    ErrorCode.EXPIRED, f"action {action_id!r} expired before it was answered", reply_to=reply_to
                )
            raise ProtocolError(
                ErrorCode.ALREADY_DECIDED, f"action {action_id!r} was already {done.status}", reply_to=reply_to
            )
        if not action.may_answer(sub, roles):
            who = "the requesting user" if action.approver == "user" else "an admin other than the requester"
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only {who} may answer action {action_id!r}", reply_to=reply_to)
        action.grant_plan = plan(action.remember, remember, approved, sub, roles, reply_to)
        action.finish("approved" if approved else "denied", sub, reason)
        self._retire(action)
        return action

    def _retire(self, action: PendingAction) -> None:
        self.pending.pop(action.action_id, None)
        self.finished[action.action_id] = action
        while len(self.finished) > _REMEMBERED:
            self.finished.popitem(last=False)
        for observer in self.observers:
            observer("retired", action)

    def retire(self, action: PendingAction) -> None:
        """Forget a finished action (its status already set): for the bus."""
        self._retire(action)


class BusHub(Protocol):
    """What a bus needs of the hub: its broker and its store (the hub imports this module, not the reverse)."""

    @property
    def approvals(self) -> ApprovalBroker: ...

    @property
    def store(self) -> Store: ...


class ControlPeer(Protocol):
    """The connection a turn control came on: whose it is, and where its answer goes."""

    @property
    def principal(self) -> Principal: ...

    def send(self, frame: ServerFrame, *, control: bool = False) -> None: ...


class ApprovalBus(Protocol):
    """How approvals and turn controls reach the instance that waits for them."""

    async def answer(self, hub: BusHub, action_id: str, approved: bool, sub: str, roles: frozenset[str],
                     reason: str | None, reply_to: str, remember: Remember | None = None) -> PendingAction:
        """Decide an action (exactly once) for an approver; raises ``ProtocolError`` as
        :meth:`ApprovalBroker.answer` does, ``remember`` included."""
        ...

    async def settle(self, hub: BusHub, pending: PendingAction) -> None:
        """The wait for ``pending`` ended (answered, or timed out while still ``pending``):
        record the outcome in the store and leave in ``pending.status`` what was decided."""
        ...

    async def forward_control(self, conn: ControlPeer, frame: AgentControl) -> bool:
        """A control for a session not live on this instance: hand it to the one running
        it and answer ``frame`` (True), or False when no other instance runs it."""
        ...

    def remote_sessions(self, sub: str) -> int:
        """Live sessions of ``sub`` on the other instances (best effort)."""
        ...

    def remote_connections(self, sub: str) -> int:
        """Connections of ``sub`` to the other instances (best effort)."""
        ...


@attrs.define(eq=False)
class LocalBus:
    """One instance: the broker decides, the store records after (what it always did)."""

    async def answer(self, hub: BusHub, action_id: str, approved: bool, sub: str, roles: frozenset[str],
                     reason: str | None, reply_to: str, remember: Remember | None = None) -> PendingAction:
        return hub.approvals.answer(action_id, approved, sub, roles, reason, reply_to, remember)

    async def settle(self, hub: BusHub, pending: PendingAction) -> None:
        if pending.status == "pending":
            hub.approvals.close(pending, "expired", "no answer in time")
            await hub.store.expire_actions()
        elif not pending.recorded and not await hub.store.decide_action(
                pending.action_id, pending.status, pending.decided_by, pending.reason):
            pending.status = "expired"

    async def forward_control(self, conn: ControlPeer, frame: AgentControl) -> bool:
        return False

    def remote_sessions(self, sub: str) -> int:
        return 0

    def remote_connections(self, sub: str) -> int:
        return 0
