"""Evaluate a request against every policy rule: the decision, and each rule's verdict.

Semantics (the README's "Policies" section says the same for operators):

1. Default deny: with no matching ``allow`` or ``require_approval`` rule, the
   answer is ``deny``.
2. An explicit deny wins: one matching ``deny`` rule denies, whatever else
   matches and in whatever order the rules are written.
3. The tool's permission level sets the minimum approval: 0 none, 1 the
   session's own user, 2 an admin.  A matching ``allow`` rule grants exactly
   that; a matching ``require_approval`` rule both grants and may make the
   approval stricter (admin > user > none), never weaker.  The final approver
   is the strictest of the level's and every matching ``require_approval``
   rule's.
4. Level 3 (system restricted) runs only where a matching ``allow`` or
   ``require_approval`` rule names the tool by its exact name in
   ``targets.tools`` — a glob or a ``levels`` entry does not unlock it.  Then
   the approval is the one the matching rules name (an ``allow`` alone: none).
5. Resource reads have no level: they are treated as level 0, so an ``allow``
   reads without approval and a ``require_approval`` rule asks its approver.
6. Arguments not known (``arguments=None``, used to list tools and draw the
   matrix): a permitting rule's conditions are assumed to hold and a deny's
   are not, answering "allowed for some arguments?"; the decision is marked
   ``conditional``.  Calls are always decided with their arguments.
7. Self-approval: an admin approval may be given by the requester only when
   every matching ``require_approval`` rule asking for an admin says
   ``self_approval: true`` (the level alone never allows it).  A user approval
   is by design the requester's own.

Matching (see ``_match``): subjects by role or exact ``sub``; actions;
targets (tool names and resource URIs by the same globs, :mod:`engine.globs`:
``**`` crosses ``/``, ``*`` and ``?`` do not, ``[`` is literal; levels);
conditions on arguments, all of which must hold.  A condition that cannot be
decided (argument missing or of the wrong type, a path that cannot be placed)
holds for a deny and never for a grant: denies fail closed.  Rules are considered in
policy order (files by name, rules in file order); the order changes only
which rule is reported as deciding among equals, never the effect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ..config.model import Config, PolicyRule
from ._decision import APPROVER_RANK, LEVEL_APPROVER, Approver, Decision, Match
from ._match import Miss, Request, names_target, rule_miss, subject_miss, target_miss, undecided_conditions
from ._revision import policy_revision

ACTIONS = ("tool.call", "resource.read", "agent.delegate", "board.append")
_APPROVAL_TEXT = {"user": "the user's approval", "admin": "an admin's approval"}


@attrs.frozen
class Considered:
    """One rule's verdict on a request: matched, or the first reason it did not."""

    rule: PolicyRule
    miss: Miss | None

    @property
    def matched(self) -> bool:
        return self.miss is None


@attrs.frozen
class Evaluation:
    """A decision with everything behind it, for ``policy explain`` and the tests."""

    request: Request
    decision: Decision
    considered: tuple[Considered, ...]


def policy_rules(config: Config) -> Iterator[PolicyRule]:
    """Every rule in policy order: files by name, rules in file order."""
    for policy in config.policies:
        yield from policy.rules


def _ref(rule: PolicyRule) -> str:
    return f"rule {rule.id} ({rule.source})"


def _approver_of(rule: PolicyRule) -> Approver:
    return rule.approver if rule.effect == "require_approval" and rule.approver else "none"


def evaluate(config: Config, request: Request) -> Evaluation:
    """Decide ``request`` under ``config``'s policies (pure: the revision was hashed at load)."""
    considered = tuple(Considered(rule, rule_miss(rule, request)) for rule in policy_rules(config))
    matched = [c.rule for c in considered if c.matched]
    decision = _decide(request, matched)
    deciding = next((rule for rule in matched if decision.deciding_rule and rule.id == decision.deciding_rule.id), None)
    if decision.effect == "deny" and deciding is not None and request.arguments is not None:
        unsure = undecided_conditions(deciding, request.arguments)
        if unsure:
            decision = attrs.evolve(decision, reason=f"{decision.reason}: {'; '.join(unsure)}, so the deny applies "
                                    "(a deny that cannot be decided fails closed)")
    conditional = request.arguments is None and any(rule.conditions for rule in matched)
    if conditional and decision.allowed:
        decision = attrs.evolve(decision, reason=decision.reason + " (for arguments that meet the rules' conditions)")
    decision = attrs.evolve(decision, policy_revision=policy_revision(config), conditional=conditional)
    return Evaluation(request, decision, considered)


def _decide(request: Request, matched: list[PolicyRule]) -> Decision:
    matches = tuple(Match.of(rule) for rule in matched)

    def decision(
        effect: str, approver: Approver, reason: str, by: PolicyRule | None, self_ok: bool = False
    ) -> Decision:
        return Decision(effect, approver, reason, matches, None if by is None else Match.of(by), "", self_ok)  # type: ignore[arg-type]

    denies = [rule for rule in matched if rule.effect == "deny"]
    if denies:
        return decision("deny", "none", f"denied by {_ref(denies[0])}", denies[0])
    permitting = [rule for rule in matched if rule.effect != "deny"]
    level = request.level if request.has_level else 0
    if level == 3:
        naming = [rule for rule in permitting if names_target(rule, request)]
        if not naming:
            reason = f"{request.target} is level 3 (system restricted): no rule names it for this subject"
            if permitting:
                ids = ", ".join(_ref(rule) for rule in permitting)
                reason += f"; {ids} match only by a glob or a level, which does not unlock level 3"
            return decision("deny", "none", reason, None)
        grant = naming[0]
        grant_text = f"allowed by {_ref(grant)}, which names {request.target} (level 3)"
    elif not permitting:
        return decision("deny", "none", f"no rule allows {request.describe()}; denied by default", None)
    else:
        grant = next((rule for rule in permitting if rule.effect == "allow"), permitting[0])
        grant_text = f"allowed by {_ref(grant)}"

    floor = LEVEL_APPROVER[level]
    approver: Approver = floor
    raiser: PolicyRule | None = None
    for rule in permitting:
        wanted = _approver_of(rule)
        if APPROVER_RANK[wanted] > APPROVER_RANK[approver]:
            approver, raiser = wanted, rule
    if approver == "none":
        tail = f"; level {level} needs no approval" if request.has_level else ""
        return decision("allow", "none", grant_text + tail, grant)
    if raiser is None:
        reason = f"{grant_text}; level {level} requires {_APPROVAL_TEXT[approver]}"
        by = grant
    elif raiser is grant:
        reason = f"{_ref(raiser)} allows it with {_APPROVAL_TEXT[approver]}"
        by = raiser
    else:
        reason = f"{grant_text}; {_ref(raiser)} requires {_APPROVAL_TEXT[approver]}"
        by = raiser
    self_ok = False
    if approver == "admin":
        askers = [rule for rule in permitting if _approver_of(rule) == "admin"]
        self_ok = bool(askers) and all(rule.self_approval for rule in askers)
        if self_ok:
            reason += "; the requester may approve it themselves"
    return decision("require_approval", approver, reason, by, self_ok)


def make_request(
    config: Config,
    sub: str | None,
    roles: Iterable[str],
    action: str,
    target: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    level: int | None = None,
) -> Request | Decision:
    """The request for ``target``, or a deny when it names no known tool or no known action.

    A tool's level comes from ``config.tools`` unless ``level`` is given (for a
    tool the config does not declare, such as one a client offers).
    """
    if action not in ACTIONS:
        return Decision("deny", "none", f"unknown action {action!r} (known: {', '.join(ACTIONS)})",
                        policy_revision=policy_revision(config))
    if action == "tool.call" and level is None:
        tool = config.tools.get(target)
        if tool is None:
            return Decision("deny", "none", f"unknown tool {target!r}", policy_revision=policy_revision(config))
        level = tool.permission_level
    if action == "agent.delegate" and level is None:
        asked = config.agents.get(target)
        if asked is None:
            return Decision("deny", "none", f"unknown agent {target!r}", policy_revision=policy_revision(config))
        level = asked.delegation_level
    if action == "board.append":
        return Request(sub, frozenset(roles), action, target, 0, arguments)
    if action == "resource.read":
        # A read has no arguments: conditions never hold for it (nothing to assume).
        return Request(sub, frozenset(roles), action, target, 0, arguments or {})
    assert level is not None  # looked up above when not given
    return Request(sub, frozenset(roles), action, target, level, arguments)


def explain(
    config: Config,
    sub: str | None,
    roles: Iterable[str],
    action: str,
    target: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    level: int | None = None,
) -> Evaluation | Decision:
    """:func:`evaluate` for the engine-facing arguments; a bare Decision when the request is unknown."""
    request = make_request(config, sub, roles, action, target, arguments, level=level)
    if isinstance(request, Decision):
        return request
    return evaluate(config, request)


def decide(
    config: Config,
    sub: str | None,
    roles: Iterable[str],
    action: str,
    target: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    level: int | None = None,
) -> Decision:
    """Whether ``sub`` holding ``roles`` may do ``action`` on ``target`` (a tool name or a resource URI).

    Never raises for an unknown tool or action: that is a deny with its reason.
    ``arguments=None`` means "not known yet" (as for listing tools): the answer
    is then whether *some* arguments could be allowed — a permitting rule's
    conditions are assumed to hold, a deny's are not — and the decision says
    ``conditional``.  A call is always decided with its actual arguments.

    A decision that cannot depend on the arguments (no rule with conditions applies to
    this subject, action and target) is remembered for the configuration object it was
    made under (:class:`_Remembered`): the next call of the same tool by the same
    subject and roles is a dictionary look-up.
    """
    roles = frozenset(roles)
    key = (sub, roles, action, target, level)
    remembered = _remembered.get(config, key)
    if remembered is not None:
        return remembered
    request = make_request(config, sub, roles, action, target, arguments, level=level)
    if isinstance(request, Decision):
        _remembered.put(config, key, request)
        return request
    decision = evaluate(config, request).decision
    if not _depends_on_arguments(config, request):
        _remembered.put(config, key, decision)
    return decision


def _depends_on_arguments(config: Config, request: Request) -> bool:
    """Whether a rule with conditions applies to the request's subject, action and target:
    only then can its arguments change the decision (everything else in it is in the key)."""
    return any(
        rule.conditions and subject_miss(rule, request.sub, request.roles) is None
        and request.action in rule.actions and target_miss(rule, request) is None
        for rule in policy_rules(config)
    )


class _Remembered:
    """Argument-independent decisions of the configuration in force, by (sub, roles, action, target, level).

    One configuration at a time (a reload brings a new object: everything is forgotten),
    identified by the object itself, which is immutable; at most :data:`MAX` decisions
    (then it starts over: subjects are many). Thread-safe: a lock around every use.
    """

    MAX = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: Config | None = None
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    def get(self, config: Config, key: tuple[Any, ...]) -> Decision | None:
        with self._lock:
            return self._decisions.get(key) if config is self._config else None

    def put(self, config: Config, key: tuple[Any, ...], decision: Decision) -> None:
        with self._lock:
            if config is not self._config or len(self._decisions) >= self.MAX:
                self._config, self._decisions = config, {}
            self._decisions[key] = decision


_remembered = _Remembered()
