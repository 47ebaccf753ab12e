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
"""

from __future__ import annotations

import collections
from typing import Literal

import attrs
import trio

from ..grants import GrantPlan, RememberContext, plan
from ..protocol import AgentAction, ErrorCode, ProtocolError, Remember

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

    def add(self, action: PendingAction) -> None:
        self.pending[action.action_id] = action

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
