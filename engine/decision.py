"""Whether an action may run, and who must approve it first: one function, one value.

This is the level-only decision of the engine issue: level 0 runs, level 1 asks
the session's own user, level 2 asks a connected admin, level 3 is refused.
The policy engine replaces :func:`decide`'s body; everything else in the engine
only ever sees a :class:`Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .config.model import Tool

ADMIN_ROLE = "admin"


@attrs.frozen
class Decision:
    """What happens to one action, why, and which rules said so."""

    effect: Literal["allow", "deny", "require_approval"]
    approver: Literal["none", "user", "admin"]
    reason: str
    rules: tuple[str, ...] = ()

    @property
    def requires_approval(self) -> bool:
        return self.effect == "require_approval"


def decide(sub: str, roles: frozenset[str], tool: Tool, arguments: Mapping[str, Any]) -> Decision:
    """Decide a call of ``tool`` by ``sub`` holding ``roles`` (arguments kept for policies)."""
    level = tool.permission_level
    if level == 0:
        return Decision("allow", "none", "level 0: runs without approval")
    if level == 1:
        return Decision("require_approval", "user", "level 1: the user approves")
    if level == 2:
        return Decision("require_approval", "admin", "level 2: an admin approves")
    return Decision("deny", "none", "level 3 (system restricted): refused unless a policy explicitly allows it")
