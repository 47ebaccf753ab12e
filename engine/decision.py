"""Whether an action may run, and who must approve it first: one function, one value.

The engine-facing face of :mod:`engine.policy`: the server calls :func:`decide`
for every tool call (and resource read) and for every tool it lists, and only
ever sees a :class:`Decision`.  There is one ``decide``: this module re-exports
:func:`engine.policy.decide`.  The semantics (default deny, deny wins, the
level as the minimum approval, level 3 only by name, denies failing closed)
live in ``engine/policy/_engine.py``, ``engine/policy/_match.py`` and the
README's "Policies" section.
"""

from __future__ import annotations

from .policy import Decision as Decision
from .policy import Match as Match
from .policy import decide as decide
from .policy import policy_revision as policy_revision

ADMIN_ROLE = "admin"

__all__ = ["ADMIN_ROLE", "Decision", "Match", "decide", "policy_revision"]
