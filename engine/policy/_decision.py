"""The value a policy decision is: what happens, who approves, why, and which rules said so."""

from __future__ import annotations

from typing import Literal

import attrs

from ..config.model import PolicyRule

Effect = Literal["allow", "deny", "require_approval"]
Approver = Literal["none", "user", "admin"]

# Strictness of approvers: a require_approval rule may raise the approver along this order, never lower it.
APPROVER_RANK: dict[str, int] = {"none": 0, "user": 1, "admin": 2}
# The minimum approval each permission level demands; level 3 has none of its own (see the engine).
LEVEL_APPROVER: dict[int, Approver] = {0: "none", 1: "user", 2: "admin", 3: "none"}


@attrs.frozen
class Match:
    """One rule that matched a request: its id, its effect and where it is written."""

    id: str
    effect: Effect
    source: str  # "policies/default.yaml:14"

    @classmethod
    def of(cls, rule: PolicyRule) -> Match:
        return cls(rule.id, rule.effect, str(rule.source))

    def __str__(self) -> str:
        return f"{self.id} ({self.source})"


@attrs.frozen
class Decision:
    """What happens to one action, why, and which rules said so.

    ``approver`` is ``none`` whenever ``effect`` is not ``require_approval``.
    ``rules`` are every rule that matched, in policy order (files by name, rules
    in file order); ``deciding_rule`` is the one that settled the effect and the
    approver, ``None`` when nothing matched (default deny) or the level alone
    set the approval on top of an allow.  ``self_approval`` is true only when a
    rule lets the requester approve their own admin-approved request.
    """

    effect: Effect
    approver: Approver
    reason: str
    rules: tuple[Match, ...] = ()
    deciding_rule: Match | None = None
    policy_revision: str = ""
    self_approval: bool = False
    # True when the arguments were not known and a matched rule's conditions were assumed to hold.
    conditional: bool = False

    @property
    def requires_approval(self) -> bool:
        return self.effect == "require_approval"

    @property
    def allowed(self) -> bool:
        """Whether the action may run at all (possibly after an approval)."""
        return self.effect != "deny"

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(match.id for match in self.rules)

    @property
    def label(self) -> str:
        """One word for tables: ``allow``, ``user``, ``admin`` (who approves) or ``deny``."""
        if self.effect == "require_approval":
            return self.approver
        return self.effect

    def to_json(self) -> dict[str, object]:
        return {
            "effect": self.effect,
            "approver": self.approver,
            "reason": self.reason,
            "rules": [{"id": m.id, "effect": m.effect, "source": m.source} for m in self.rules],
            "deciding_rule": None if self.deciding_rule is None else self.deciding_rule.id,
            "policy_revision": self.policy_revision,
            "self_approval": self.self_approval,
            "conditional": self.conditional,
        }
