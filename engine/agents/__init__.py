"""Custom agents in Python: the base class agent authors extend, and the loader.

``from engine.agents import BaseAgent, AgentContext, ActionResult`` is the
whole API an agent module needs (see :mod:`engine.agents.base`).  The engine
runs them in ``engine/server/agentrun.py``; delegation between agents lives in
``engine/server/delegation.py``.
"""

from .base import MAX_SAID_CHARS as MAX_SAID_CHARS
from .base import ActionResult as ActionResult
from .base import AgentContext as AgentContext
from .base import AgentError as AgentError
from .base import BaseAgent as BaseAgent
from .loading import AgentLoadError as AgentLoadError
from .loading import agent_module_files as agent_module_files
from .loading import load_agent_class as load_agent_class
