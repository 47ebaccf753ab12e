"""Checking an approver's ``remember`` against the action and the policy: a plan, or a refusal.

Runs before the approval is given: a ``remember`` that cannot be honoured refuses the
whole answer (the action keeps waiting, nothing is remembered), so the approver can
answer again with a narrower one or none. Refusals, each a ``ProtocolError``:

- ``invalid_message``: ``remember`` on a denial; ``duration``/``match`` with a scope
  that takes none; a missing, malformed or zero ``duration``; scope ``session`` for an
  action outside any session; a ``match`` naming no argument of the action, an unknown
  kind, a ``program`` that is not a plain command line;
- ``forbidden``: the policy does not let this approval be remembered (``remember:
  never``, level 3 without a rule saying so), a duration above the policy's bound, an
  admin's approval remembered by someone without the admin role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..config.units import format_duration, parse_duration
from ..policy import RememberBound
from ..protocol import ErrorCode, ProtocolError, Remember, RememberScope
from ._match import MAX_MATCHED, Digest, build

ADMIN_ROLE = "admin"


@attrs.frozen
class RememberContext:
    """What an action waiting for approval offers to remember, fixed when it was asked."""

    kind: str
    name: str
    arguments: Mapping[str, Any] = attrs.field(hash=False)
    secret: frozenset[str]
    level: int
    approver: str  # "user" | "admin"
    session_id: str | None
    requester: str
    bound: RememberBound
    rule_id: str
    rule_digest: str
    action_id: str
    # The store's keyed digest: pins an argument's value without keeping a secret in the clear.
    digest: Digest = attrs.field(eq=False, repr=False)


@attrs.frozen
class GrantPlan:
    """A checked ``remember``: the grant to make once the approval has been recorded."""

    context: RememberContext
    scope: str  # "session" | "duration"
    lasts_s: float
    constraints: tuple[dict[str, Any], ...] | None = attrs.field(hash=False)
    made_by: str


def _refuse(code: ErrorCode, message: str, reply_to: str, field: str = "") -> ProtocolError:
    path = "$.payload.remember" + (f".{field}" if field else "")
    return ProtocolError(code, message, reply_to=reply_to, details={"path": path})


def plan(
    context: RememberContext | None, remember: Remember | None, approved: bool, sub: str, roles: frozenset[str],
    reply_to: str,
) -> GrantPlan | None:
    """The grant ``remember`` asks for, None for "this action only"; raises ProtocolError (module docstring)."""
    if remember is None or (remember.scope == RememberScope.ACTION and remember.duration is None
                            and remember.match is None):
        return None
    if not approved:
        raise _refuse(ErrorCode.INVALID_MESSAGE, "remember applies to an approval, not to a denial", reply_to)
    if remember.scope == RememberScope.ACTION:
        raise _refuse(ErrorCode.INVALID_MESSAGE, "scope 'action' takes no duration and no match", reply_to)
    if context is None or not context.bound.allowed:
        why = context.bound.reason if context is not None else "this action cannot be remembered"
        raise _refuse(ErrorCode.FORBIDDEN, f"this approval cannot be remembered: {why}; approve without remember "
                      "(this action only)", reply_to, "scope")
    bound_s = context.bound.max_s
    assert bound_s is not None
    if context.approver == "admin" and ADMIN_ROLE not in roles:
        raise _refuse(ErrorCode.FORBIDDEN, "only an admin may remember an admin's approval", reply_to)
    if remember.scope == RememberScope.SESSION:
        if remember.duration is not None:
            raise _refuse(ErrorCode.INVALID_MESSAGE, "scope 'session' takes no duration: it lasts while the "
                          f"session does, at most {format_duration(bound_s)}; use scope 'duration' for less",
                          reply_to, "duration")
        if context.session_id is None:
            raise _refuse(ErrorCode.INVALID_MESSAGE, "scope 'session' needs an action of a session; this one is a "
                          "direct call: use scope 'duration'", reply_to, "scope")
        lasts_s = bound_s
    else:
        if remember.duration is None:
            raise _refuse(ErrorCode.INVALID_MESSAGE, "scope 'duration' needs a duration, e.g. \"1h\"", reply_to,
                          "duration")
        try:
            lasts_s = float(parse_duration(remember.duration))
        except ValueError as exc:
            raise _refuse(ErrorCode.INVALID_MESSAGE, f"duration: {exc}", reply_to, "duration") from None
        if lasts_s <= 0:
            raise _refuse(ErrorCode.INVALID_MESSAGE, "duration must be longer than 0s", reply_to, "duration")
        if lasts_s > bound_s:
            raise _refuse(ErrorCode.FORBIDDEN, f"duration {remember.duration} is longer than this approval may be "
                          f"remembered: {context.bound.describe()}", reply_to, "duration")
    constraints = None
    if remember.match is not None:
        constraints = _constraints(context, remember.match, context.digest, reply_to)
    return GrantPlan(context, str(remember.scope), lasts_s, constraints, sub)


def _constraints(
    context: RememberContext, match: Mapping[str, Any], digest: Digest, reply_to: str
) -> tuple[dict[str, Any], ...]:
    if not match:
        raise _refuse(ErrorCode.INVALID_MESSAGE, "match names no argument: leave it out to remember exactly these "
                      "arguments", reply_to, "match")
    if len(match) > MAX_MATCHED:
        raise _refuse(ErrorCode.INVALID_MESSAGE, f"match names more than {MAX_MATCHED} arguments", reply_to, "match")
    bad = next((k for k, v in match.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise _refuse(ErrorCode.INVALID_MESSAGE, f"match.{bad[:64]}: must be \"same\" or \"program\"", reply_to,
                      "match")
    try:
        return build(match, context.arguments, digest, context.secret)
    except ValueError as exc:
        raise _refuse(ErrorCode.INVALID_MESSAGE, f"match.{str(exc)[:300]}", reply_to, "match") from None
