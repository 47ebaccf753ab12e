"""MCP servers as sandboxed tools: the runtime behind ``mcp_server`` tool files.

An MCP server declared in ``tools.d`` runs in the tool file's sandbox
(`sandbox.open_session`), spoken to over stdio with the official SDK's client session.
Each allowlisted upstream tool is an ordinary configured Tool (policy, levels,
approvals, audit unchanged) whose calls `toolrun.run_tool` hands to `call_tool`.
Definitions are pinned (`sconnect mcp pin`) and compared at every start.

Importing this package is cheap; the SDK is imported only when a server is started.
"""

from ._errors import StartFailed as StartFailed
from ._errors import UpstreamError as UpstreamError
from ._manager import Upstreams as Upstreams
from ._manager import call_tool as call_tool
from ._manager import current as current
from ._manager import for_hub as for_hub
from ._manager import server_spec as server_spec
from ._manager import sync_current as sync_current
from ._manager import use as use
