"""The policy engine: who may call which tool or read which resource, and who approves.

Pure functions over a loaded :class:`~engine.config.Config`; the config loader
calls in here too (rule matching, the revision hash), so nothing imported by
this package may import the loader: ``load_policy_set`` (``policy diff``) is
imported from ``._load`` by its one user.  The semantics are documented in
``_engine``, ``_match`` and in the README.
"""

from ._analysis import Cell as Cell
from ._analysis import Change as Change
from ._analysis import cell as cell
from ._analysis import diff as diff
from ._analysis import matrix as matrix
from ._analysis import named_subs as named_subs
from ._analysis import resource_probes as resource_probes
from ._analysis import subjects as subjects
from ._analysis import targets as targets
from ._analysis import who_can as who_can
from ._cases import CaseResult as CaseResult
from ._cases import CasesReport as CasesReport
from ._cases import load_cases as load_cases
from ._cases import run_cases as run_cases
from ._decision import Decision as Decision
from ._decision import Match as Match
from ._engine import ACTIONS as ACTIONS
from ._engine import Considered as Considered
from ._engine import Evaluation as Evaluation
from ._engine import decide as decide
from ._engine import evaluate as evaluate
from ._engine import explain as explain
from ._engine import policy_rules as policy_rules
from ._lint import Finding as Finding
from ._lint import lint as lint
from ._match import Miss as Miss
from ._match import Request as Request
from ._match import may_grant_tool as may_grant_tool
from ._remember import DEFAULT_REMEMBER_S as DEFAULT_REMEMBER_S
from ._remember import RememberBound as RememberBound
from ._remember import find_rule as find_rule
from ._remember import remember_bound as remember_bound
from ._remember import rule_fingerprint as rule_fingerprint
from ._revision import policy_revision as policy_revision
from ._revision import revision_of as revision_of
