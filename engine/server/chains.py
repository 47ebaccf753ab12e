"""Chain tools now live with their kind, :mod:`engine.toolkinds.chain`; these names stay importable here."""

from ..toolkinds.chain import ChainOutcome as ChainOutcome
from ..toolkinds.chain import Step as Step
from ..toolkinds.chain import StepOutcome as StepOutcome
from ..toolkinds.chain import run_chain as run_chain
