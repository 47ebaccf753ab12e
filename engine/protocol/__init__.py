"""The WebSocket protocol of Scalytics Connect: messages, schema, codec. Free of I/O.

Every frame is one JSON object ``{"type": str, "id": str, "payload": object}``; the
JSON Schema shipped as ``schema.json`` (see :func:`schema`) is the contract. The server
calls :func:`decode` on every incoming text message, dispatches on the frame class, and
sends frames built from the server classes with :func:`encode`; a refused request is a
:class:`ProtocolError`, sent back as :func:`error_frame`.

Tool results may carry MCP content blocks beside ``output`` (``engine.protocol.content``:
the contract, its checks, the text models read, audit digests).

Exceptions::

    ProtocolError(Exception)   code: ErrorCode, message, reply_to, details
    ContentError(ValueError)   content blocks that break the contract: problems
"""

from . import content as content
from ._codec import decode as decode
from ._codec import decode_server as decode_server
from ._codec import encode as encode
from ._codec import error_frame as error_frame
from ._codec import to_wire as to_wire
from ._errors import ErrorCode as ErrorCode
from ._errors import ProtocolError as ProtocolError
from ._messages import ActionApproval as ActionApproval
from ._messages import ActionKind as ActionKind
from ._messages import ActionList as ActionList
from ._messages import ActionListRequest as ActionListRequest
from ._messages import AgentAction as AgentAction
from ._messages import AgentCommand as AgentCommand
from ._messages import AgentConnect as AgentConnect
from ._messages import AgentControl as AgentControl
from ._messages import AgentResponse as AgentResponse
from ._messages import AgentResult as AgentResult
from ._messages import AgentState as AgentState
from ._messages import Approver as Approver
from ._messages import ClientAgentResult as ClientAgentResult
from ._messages import ClientFrame as ClientFrame
from ._messages import ClientToolList as ClientToolList
from ._messages import ErrorFrame as ErrorFrame
from ._messages import Executor as Executor
from ._messages import Feedback as Feedback
from ._messages import FeedbackRecorded as FeedbackRecorded
from ._messages import Frame as Frame
from ._messages import GrantInfo as GrantInfo
from ._messages import GrantList as GrantList
from ._messages import GrantListRequest as GrantListRequest
from ._messages import GrantRef as GrantRef
from ._messages import GrantRevoke as GrantRevoke
from ._messages import GrantRevoked as GrantRevoked
from ._messages import LifecycleState as LifecycleState
from ._messages import MemoryForget as MemoryForget
from ._messages import MemoryForgotten as MemoryForgotten
from ._messages import MemoryInfo as MemoryInfo
from ._messages import MemoryList as MemoryList
from ._messages import MemoryListRequest as MemoryListRequest
from ._messages import OfferedTool as OfferedTool
from ._messages import PendingActionInfo as PendingActionInfo
from ._messages import Remember as Remember
from ._messages import RememberScope as RememberScope
from ._messages import ResourceInfo as ResourceInfo
from ._messages import ResourceList as ResourceList
from ._messages import ResourceListRequest as ResourceListRequest
from ._messages import ResourceRequest as ResourceRequest
from ._messages import ResourceResponse as ResourceResponse
from ._messages import ResponseToken as ResponseToken
from ._messages import ResultStatus as ResultStatus
from ._messages import ServerFrame as ServerFrame
from ._messages import ToolCall as ToolCall
from ._messages import ToolInfo as ToolInfo
from ._messages import ToolList as ToolList
from ._messages import UserMessage as UserMessage
from ._messages import new_id as new_id
from ._schema import SCHEMA_ID as SCHEMA_ID
from ._schema import schema as schema
from ._schema import schema_text as schema_text
from .content import ContentError as ContentError
