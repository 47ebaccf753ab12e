"""Grants: approvals a person chose to remember, so that the same action runs without asking again.

Pure parts only (no I/O): what a grant reaches (:mod:`._match`) and the check of an
approver's ``remember`` against the action and the policy (:mod:`._plan`).  The
records live in the store (``engine/store/_grants.py``); the server makes, finds,
lists, revokes and ends them in ``engine/server/grants.py``.
"""

from ._match import MATCH_KINDS as MATCH_KINDS
from ._match import exactly as exactly
from ._match import program_of as program_of
from ._match import satisfies as satisfies
from ._match import shown_match as shown_match
from ._plan import GrantPlan as GrantPlan
from ._plan import RememberContext as RememberContext
from ._plan import plan as plan
