"""How long a person's approval may be remembered as a grant: the policy's bound.

Only an action that needs an approval has anything to remember.  The bound comes
from the rules that permitted it (every matching ``allow`` and
``require_approval`` rule):

1. one of them says ``remember: never``: never;
2. else the shortest ``remember: {max: ...}`` among those that set one;
3. else the default by approver: 8h for a user's approval, 1h for an admin's;
   level 3 (system restricted) is never remembered unless a rule says so (2).

A grant also names the rule that required the approval and that rule's
:func:`rule_fingerprint`, so that a reload changing the rule (or a later
decision settled by another rule) ends or stops using it.
"""

from __future__ import annotations

from typing import Final

import attrs

from ..canonical import digest
from ..config.model import Config, PolicyRule
from ..config.units import format_duration
from ._decision import Decision
from ._engine import policy_rules

#: What a rule without ``remember`` allows, by who approves.
DEFAULT_REMEMBER_S: Final = {"user": 8 * 3600.0, "admin": 3600.0}


@attrs.frozen
class RememberBound:
    """``max_s``: the longest a grant may last, in seconds; None when it may not be made."""

    max_s: float | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.max_s is not None

    def describe(self) -> str:
        if self.max_s is None:
            return f"never ({self.reason})"
        return f"up to {format_duration(self.max_s)} ({self.reason})"


def remember_bound(config: Config, decision: Decision, level: int) -> RememberBound:
    """The bound on remembering the approval ``decision`` asks for (``level``: the tool's, 0 for a read)."""
    if not decision.requires_approval:
        return RememberBound(None, "nothing is approved, so nothing is remembered")
    matched = {m.id for m in decision.rules}
    permitting = [r for r in policy_rules(config) if r.id in matched and r.effect != "deny"]
    setting = [r for r in permitting if r.remember is not None]
    never = next((r for r in setting if r.remember is not None and r.remember.never), None)
    if never is not None:
        return RememberBound(None, f"rule {never.id} ({never.source}) says remember: never")
    bounded = [r for r in setting if r.remember is not None and r.remember.max is not None]
    if bounded:
        tightest = min(bounded, key=lambda r: float(r.remember.max))  # type: ignore[union-attr, arg-type]
        assert tightest.remember is not None and tightest.remember.max is not None
        return RememberBound(float(tightest.remember.max), f"rule {tightest.id} ({tightest.source})")
    if level == 3:
        return RememberBound(None, "level 3 is never remembered unless a rule sets remember")
    return RememberBound(DEFAULT_REMEMBER_S[decision.approver], f"the default for an approval by {decision.approver}")


def rule_fingerprint(rule: PolicyRule) -> str:
    """A digest of what the rule says (not where it is written): equal while the rule is unchanged."""
    body = attrs.asdict(rule, filter=lambda a, _v: a.name not in ("source", "description"))
    return digest(_jsonable(body))


def find_rule(config: Config, rule_id: str) -> PolicyRule | None:
    return next((r for r in policy_rules(config) if r.id == rule_id), None)


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)
