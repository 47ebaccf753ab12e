"""The built-in tool kinds, each one module that registers itself (see :mod:`engine.config.tool_kinds`).

Imported by the registry the first time a kind is asked for; the order here is the
order the kinds are listed in ("declare exactly one of ...").
"""

# isort: skip_file
from . import command as command
from . import python as python
from . import chain as chain
from . import mcp_server as mcp_server
from . import builtin as builtin
