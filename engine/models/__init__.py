"""Model providers behind one chat-completions-shaped interface.

A model takes the conversation (chat-completions messages) and the tools it may
call, and streams back text deltas and tool calls.  ``rules`` is built in and
deterministic; ``openai`` talks to an OpenAI-compatible endpoint.
"""

# isort: skip_file

from .base import ASK_AGENT as ASK_AGENT
from .base import ASK_AGENT_TOOL as ASK_AGENT_TOOL
from .base import READ_RESOURCE as READ_RESOURCE
from .base import READ_RESOURCE_TOOL as READ_RESOURCE_TOOL
from .base import Model as Model
from .base import ModelError as ModelError
from .base import TextDelta as TextDelta
from .base import ToolCall as ToolCall
from .base import ToolDefinition as ToolDefinition
from .factory import agent_model as agent_model
from .factory import make_model as make_model
from .routed import Routed as Routed

# The built-in providers register themselves (engine/config/model_providers.py), in this order.
from . import rules as rules
from . import openai as openai
