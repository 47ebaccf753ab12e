"""Whether an action may run, and who must approve it first: one function, one value.

The engine-facing face of :mod:`engine.policy`: the server calls :func:`decide`
for every tool call (and resource read) and for every tool it lists, and only
ever sees a :class:`Decision`.  The semantics (default deny, deny wins, the
level as the minimum approval, level 3 only by name) live in
``engine/policy/_engine.py`` and the README's "Policies" section.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from .config.model import Config
from .policy import Decision as Decision
from .policy import Match as Match
from .policy import decide as _decide
from .policy import policy_revision as policy_revision

ADMIN_ROLE = "admin"

__all__ = ["ADMIN_ROLE", "Decision", "Match", "decide", "policy_revision"]


def decide(
    config: Config,
    sub: str | None,
    roles: Set[str],
    action: str,
    target: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    level: int | None = None,
) -> Decision:
    """Decide ``action`` (``tool.call`` or ``resource.read``) on ``target`` (tool name or URI).

    ``level`` overrides the tool's declared permission level (for a tool the
    configuration does not declare).  An unknown tool or action is a deny with
    its reason, never an exception.
    """
    return _decide(config, sub, frozenset(roles), action, target, arguments, level=level)
