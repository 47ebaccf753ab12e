"""Grants at run time: made when an approval is remembered, found when an action asks
again, listed, revoked, and ended by a reload that changes what they rest on.

Finding (:func:`covering`): an action that needs an approval runs without asking when
a live, unexpired grant of the same subject covers it: the same tool (or resource),
the same session for a session grant, arguments the grant reaches
(engine/grants/_match.py), a level no higher and an approver no stricter than when it
was made, the same rule requiring the approval with the same content (its
fingerprint), and a policy that still lets such an approval be remembered at least as
long as the grant has lived.  Every check reads the configuration the call runs on, so
a grant never covers more than what was approved under the policy in force.

Grants live in the store (SQLite or PostgreSQL), so they survive a restart and every
instance sharing a database sees the same ones; each change is audited (kind
``grant``: ``grant.make``, ``grant.revoke``, ``grant.end``), and each action a grant
covers has an ``approval`` record naming the grant and who made it.

Errors: :func:`list_grants` and :func:`revoke` raise ``ProtocolError`` (``not_found``,
``forbidden``, ``invalid_state``) for the frame they answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditEvent
from ..audit._record import iso_time
from ..auth import Principal
from ..config.model import Config, Tool
from ..decision import ADMIN_ROLE, Decision
from ..grants import GrantPlan, RememberContext, exactly, satisfies, shown_match
from ..policy import RememberBound, find_rule, remember_bound, rule_fingerprint
from ..policy._decision import APPROVER_RANK
from ..protocol import (
    AgentAction,
    Approver,
    ErrorCode,
    GrantInfo,
    GrantList,
    GrantListRequest,
    GrantRevoke,
    GrantRevoked,
    ProtocolError,
    new_id,
)
from ..store import GrantRecord

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)
# A listing shows at most this many grants (newest first).
MAX_LISTED = 500
# Live grants of one subject on one tool (or resource): a new one past this ends the oldest,
# so that the check every approval-needing call makes stays small (bench/bench_grants.py).
MAX_LIVE_PER_TARGET = 32


class _Snapshot(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def policy_revision(self) -> str: ...


class _FrontDoor(Protocol):
    @property
    def hub(self) -> Hub: ...


class Caller(Protocol):
    """An action's caller as grants see it (engine.server.actions.Caller is one): actions import
    this module, so it names what it needs here instead of importing them."""

    @property
    def sub(self) -> str: ...

    @property
    def session_id(self) -> str | None: ...

    @property
    def agent(self) -> str | None: ...

    @property
    def snap(self) -> _Snapshot: ...

    @property
    def conn(self) -> _FrontDoor: ...


def remember_context(
    caller: Caller, frame: AgentAction, decision: Decision, arguments: Any, tool: Tool | None
) -> RememberContext:
    """What the approval of ``frame`` may be remembered as, fixed when it is asked."""
    config = caller.snap.config
    rule = find_rule(config, decision.deciding_rule.id) if decision.deciding_rule else None
    return RememberContext(
        kind=str(frame.kind), name=frame.name, arguments=dict(arguments) if isinstance(arguments, dict) else {},
        secret=frozenset(tool.secret_arguments) if tool else frozenset(), level=frame.level,
        approver=decision.approver, session_id=caller.session_id, requester=caller.sub,
        # No rule to rest on (cannot happen for an approval today): nothing may be remembered.
        bound=remember_bound(config, decision, frame.level) if rule else RememberBound(None, "no rule asked for it"),
        rule_id=rule.id if rule else "", rule_digest=rule_fingerprint(rule) if rule else "",
        action_id=frame.action_id, digest=caller.conn.hub.store.digest,
    )


async def covering(
    caller: Caller, frame: AgentAction, decision: Decision, arguments: Any, tool: Tool | None
) -> GrantRecord | None:
    """The oldest live grant that covers this action under the configuration it runs on, if any."""
    if not decision.requires_approval or decision.deciding_rule is None:
        return None
    config = caller.snap.config
    bound = remember_bound(config, decision, frame.level)
    rule = find_rule(config, decision.deciding_rule.id)
    if bound.max_s is None or rule is None:
        return None
    store = caller.conn.hub.store
    now = time.time()
    candidates = await store.live_grants(caller.sub, str(frame.kind), frame.name, now=now)
    if not candidates:
        return None
    fingerprint = rule_fingerprint(rule)
    args = arguments if isinstance(arguments, dict) else {}
    secret = frozenset(tool.secret_arguments) if tool else frozenset()
    for grant in candidates:
        if grant.scope == "session" and (caller.session_id is None or grant.session_id != caller.session_id):
            continue
        if (frame.level > grant.level or APPROVER_RANK[decision.approver] > APPROVER_RANK[grant.approver]
                or grant.rule_id != rule.id or grant.rule_digest != fingerprint
                or grant.created_at + bound.max_s <= now):
            continue
        if grant.constraints is None:
            if not exactly(grant.arguments, grant.arguments_digest, args, secret, store.digest):
                continue
        elif not satisfies(grant.constraints, args, store.digest):
            continue
        return grant
    return None


async def make(caller: Caller, plan: GrantPlan, audit_context: Mapping[str, Any]) -> GrantRecord:
    """Record the grant an approver asked for (after the approval itself was recorded), and audit it."""
    hub = caller.conn.hub
    context = plan.context
    now = time.time()
    from ..audit import redact

    record = GrantRecord(
        grant_id=new_id(), subject=context.requester,
        session_id=context.session_id if plan.scope == "session" else None, scope=plan.scope, kind=context.kind,
        name=context.name, arguments=redact(dict(context.arguments), context.secret),
        arguments_digest=hub.store.digest(dict(context.arguments)), constraints=plan.constraints,
        level=context.level, approver=context.approver, rule_id=context.rule_id, rule_digest=context.rule_digest,
        action_id=context.action_id, made_by=plan.made_by, created_at=now, expires_at=now + plan.lasts_s,
        status="live",
    )
    # Audited first: nothing is remembered without its record.
    await hub.audit.record(AuditEvent(
        kind="grant", subject=record.subject, session_id=caller.session_id, agent=caller.agent,
        action="grant.make", target=record.name, arguments=dict(context.arguments), secret=context.secret,
        decided_by="person", approver=record.made_by, outcome="made",
        policy_revision=caller.snap.policy_revision,
        details={**audit_context, **_audited(record)},
    ))
    await hub.store.add_grant(record)
    live = await hub.store.live_grants(record.subject, record.kind, record.name)
    for old in live[: max(0, len(live) - MAX_LIVE_PER_TARGET)]:
        why = f"replaced by a newer grant: at most {MAX_LIVE_PER_TARGET} live grants per subject and tool"
        if await hub.store.end_grant(old.grant_id, "ended", None, why):
            await hub.audit.record(AuditEvent(
                kind="grant", subject=old.subject, session_id=old.session_id, action="grant.end", target=old.name,
                outcome="ended", policy_revision=caller.snap.policy_revision,
                details={**_audited(old), "reason": why},
            ))
    return record


def info(record: GrantRecord, now: float | None = None) -> GrantInfo:
    """A grant as the protocol lists it (``expired``: live in the store but past its time)."""
    at = time.time() if now is None else now
    status = "expired" if record.status == "live" and record.expires_at <= at else record.status
    return GrantInfo(
        grant_id=record.grant_id, subject=record.subject, made_by=record.made_by, scope=record.scope,
        kind=record.kind,  # type: ignore[arg-type]
        name=record.name, arguments=dict(record.arguments), level=record.level,
        approver=Approver(record.approver), rule_id=record.rule_id,
        created_at=iso_time(record.created_at), expires_at=iso_time(record.expires_at),
        expires_in_s=max(0.0, round(record.expires_at - at, 3)), status=status, session_id=record.session_id,
        match=shown_match(record.constraints), ended_by=record.ended_by, end_reason=record.end_reason,
    )


async def list_grants(hub: Hub, principal: Principal, frame: GrantListRequest) -> GrantList:
    """The grants ``principal`` may see: those covering or made by them; an admin sees everyone's."""
    admin = ADMIN_ROLE in principal.roles
    if frame.session_id is not None:
        session = await hub.store.get_session(frame.session_id)
        if session is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {frame.session_id!r}", reply_to=frame.id)
        if session.subject != principal.sub and not admin:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this session belongs to another subject", reply_to=frame.id)
    records = await hub.store.grants(
        subject=None if admin else principal.sub, session_id=frame.session_id, live=not frame.all, limit=MAX_LISTED,
    )
    now = time.time()
    return GrantList(grants=tuple(info(r, now) for r in records), reply_to=frame.id)


async def revoke(hub: Hub, principal: Principal, frame: GrantRevoke, audit_context: Mapping[str, Any]) -> GrantRevoked:
    """End a grant now, for its subject, its maker or an admin; audited."""
    record = await hub.store.get_grant(frame.grant_id)
    if record is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no grant {frame.grant_id!r}", reply_to=frame.id)
    if principal.sub not in (record.subject, record.made_by) and ADMIN_ROLE not in principal.roles:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the grant's subject, its maker or an admin may revoke it",
                            reply_to=frame.id)
    reason = frame.reason or f"revoked by {principal.sub}"
    if not await hub.store.end_grant(record.grant_id, "revoked", principal.sub, reason):
        current = await hub.store.get_grant(record.grant_id)
        state = current.status if current is not None else "gone"
        raise ProtocolError(ErrorCode.INVALID_STATE, f"grant {frame.grant_id!r} was already {state}",
                            reply_to=frame.id)
    ended = await hub.store.get_grant(record.grant_id)
    assert ended is not None
    await hub.audit.record(AuditEvent(
        kind="grant", subject=record.subject, session_id=record.session_id, action="grant.revoke",
        target=record.name, decided_by="person", approver=principal.sub, outcome="revoked",
        policy_revision=hub.policy_revision, details={**audit_context, **_audited(ended), "reason": reason},
    ))
    return GrantRevoked(grant=info(ended), reply_to=frame.id)


async def end_stale(hub: Hub, config: Config, revision: str) -> int:
    """After a reload: end every live grant whose tool is gone or now has a higher level, or
    whose rule was removed or changed; each ending is audited. Returns how many ended."""
    ended = 0
    for record in await hub.store.grants(live=True, limit=1_000_000):
        why = stale_reason(config, record)
        if why is None or not await hub.store.end_grant(record.grant_id, "ended", None, why):
            continue
        ended += 1
        await hub.audit.record(AuditEvent(
            kind="grant", subject=record.subject, session_id=record.session_id, action="grant.end",
            target=record.name, outcome="ended", policy_revision=revision,
            details={**_audited(record), "reason": why},
        ))
    if ended:
        log.info("configuration reload ended %d grant(s) whose tool level or rule changed", ended)
    return ended


def stale_reason(config: Config, record: GrantRecord) -> str | None:
    """Why ``config`` ends this grant, None when it still rests on what it was made under."""
    if record.kind == "tool":
        tool = config.tools.get(record.name)
        if tool is None:
            return f"the tool {record.name!r} was removed"
        if tool.permission_level > record.level:
            return f"the tool {record.name!r} went from level {record.level} to {tool.permission_level}"
    rule = find_rule(config, record.rule_id)
    if rule is None:
        return f"the rule {record.rule_id!r} that required the approval was removed"
    if rule_fingerprint(rule) != record.rule_digest:
        return f"the rule {record.rule_id!r} that required the approval changed"
    return None


def _audited(record: GrantRecord) -> dict[str, Any]:
    return {
        "grant_id": record.grant_id, "grant_made_by": record.made_by, "scope": record.scope,
        "grant_session_id": record.session_id, "expires_at": iso_time(record.expires_at),
        "match": shown_match(record.constraints), "rule_id": record.rule_id, "level": record.level,
    }
