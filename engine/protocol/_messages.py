"""The protocol's messages as frozen attrs classes, one per (type, direction).

A frame ``{"type": T, "id": I, "payload": {...}}`` is represented flat: the class's
:attr:`TYPE` is ``T``, its ``id`` field is ``I`` and its other fields are the payload's
fields, with the same names as on the wire (so ``match`` statements read naturally:
``case UserMessage(session_id=sid, content=text)``). Optional payload fields default to
None and are omitted on the wire when None (except ``ErrorFrame.reply_to``, always sent).

Server frames get a fresh ``id`` when none is given, so constructing one is all a sender
does: ``AgentState(session_id=s, agent="helper", state=LifecycleState.ACTIVE)``.

Types that travel both ways (``agent_result``, ``tool_list``, ``resource_list``) have one
class per direction because their payloads differ: the client's variants are
:class:`ClientAgentResult`, :class:`ClientToolList` and :class:`ResourceListRequest`.

Fields holding arbitrary JSON (``arguments``, ``parameters``, ``output``, ``details``)
are plain dicts/values, excluded from hashing; treat them as read-only.
"""

from __future__ import annotations

import base64
import collections
import enum
import os
from typing import Any, ClassVar

import attrs

from ._errors import ErrorCode

__all__ = [
    "ActionApproval",
    "ActionList",
    "ActionListRequest",
    "PendingActionInfo",
    "ActionKind",
    "AgentAction",
    "AgentCommand",
    "AgentConnect",
    "AgentControl",
    "AgentResponse",
    "AgentResult",
    "AgentState",
    "Approver",
    "ClientAgentResult",
    "ClientFrame",
    "ClientToolList",
    "ErrorFrame",
    "Executor",
    "GrantInfo",
    "GrantList",
    "GrantListRequest",
    "GrantRef",
    "GrantRevoke",
    "GrantRevoked",
    "Remember",
    "RememberScope",
    "Feedback",
    "FeedbackRecorded",
    "MemoryForget",
    "MemoryForgotten",
    "MemoryInfo",
    "MemoryList",
    "MemoryListRequest",
    "Frame",
    "LifecycleState",
    "OfferedTool",
    "ResourceInfo",
    "ResourceList",
    "ResourceListRequest",
    "ResourceRequest",
    "ResourceResponse",
    "ResponseToken",
    "ResultStatus",
    "ServerFrame",
    "ToolCall",
    "ToolInfo",
    "ToolList",
    "UserMessage",
    "new_id",
]

# Marks optional payload fields that are left out of the wire form when None.
OMIT_IF_NONE = "protocol_omit_if_none"


def new_id() -> str:
    """A fresh frame/action id: 32 hex digits, unique across processes and hosts.

    The hex of a random (version 4) UUID, as ``uuid.uuid4().hex`` gives, from the
    operating system's random bytes read for many ids at once: each ``os.urandom``
    is a system call that lets the interpreter lock go, and a call's path makes three
    ids on the event loop while the audit writer's thread wants the lock."""
    try:
        return _ids.popleft()
    except IndexError:
        _ids.extend(_fresh_ids())
        return _ids.popleft()


_IDS_AT_ONCE = 256
# Made ahead of use; a deque's popleft and extend are atomic, so threads never share an id.
_ids: collections.deque[str] = collections.deque()


def _fresh_ids() -> list[str]:
    random = os.urandom(16 * _IDS_AT_ONCE)
    # What uuid.UUID(bytes=..., version=4) sets: the version nibble (4) and the RFC 4122 variant bits.
    return [
        format((int.from_bytes(random[i:i + 16]) & _KEEP) | _VERSION_4, "032x")
        for i in range(0, len(random), 16)
    ]


_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
# A forked child must not hand out ids its parent also has.
os.register_at_fork(after_in_child=_ids.clear)


def _optional(**kwargs: Any) -> Any:
    return attrs.field(default=None, metadata={OMIT_IF_NONE: True}, **kwargs)


def _json(**kwargs: Any) -> Any:
    # Arbitrary JSON is mutable (dict/list): keep it out of __hash__ so frames stay hashable.
    return attrs.field(hash=False, **kwargs)


class LifecycleState(enum.StrEnum):
    """Agent session lifecycle (DESIGN.md): Initialized → Active → Processing ⇄ ToolUse
    → Active; Active ⇄ Paused; Active → Terminated."""

    INITIALIZED = "initialized"
    ACTIVE = "active"
    PROCESSING = "processing"
    TOOL_USE = "tool_use"
    PAUSED = "paused"
    TERMINATED = "terminated"


class AgentCommand(enum.StrEnum):
    """``pause``/``resume`` an idle session; ``cancel`` the running turn (the session stays
    active); ``stop`` ends the session for good (``terminated``, it cannot be resumed)."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    STOP = "stop"


class ActionKind(enum.StrEnum):
    TOOL = "tool"
    RESOURCE = "resource"


class Approver(enum.StrEnum):
    NONE = "none"
    USER = "user"
    ADMIN = "admin"


class Executor(enum.StrEnum):
    SERVER = "server"
    CLIENT = "client"


class ResultStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LIMIT_EXCEEDED = "limit_exceeded"


class RememberScope(enum.StrEnum):
    """How far an approval reaches: this action only, the session, or a duration."""

    ACTION = "action"
    SESSION = "session"
    DURATION = "duration"


@attrs.frozen(kw_only=True)
class Remember:
    """The ``remember`` of an ``action_approval``: turn the approval into a grant.

    ``duration`` only with scope ``duration``; ``match`` (argument name -> ``same`` or
    ``program``) widens "exactly these arguments" to those named (engine/grants).
    """

    scope: RememberScope
    duration: str | None = _optional()
    match: dict[str, Any] | None = _optional(hash=False)


@attrs.frozen(kw_only=True)
class GrantRef:
    """The grant that covered an action (``agent_action.grant``)."""

    grant_id: str
    made_by: str
    scope: str


@attrs.frozen(kw_only=True)
class GrantInfo:
    """One grant as listed (``grant_list``) or revoked (``grant_revoke``)."""

    grant_id: str
    subject: str
    made_by: str
    scope: str
    kind: ActionKind
    name: str
    arguments: dict[str, Any] = _json()
    level: int
    approver: Approver
    rule_id: str
    created_at: str
    expires_at: str
    expires_in_s: float
    status: str
    session_id: str | None = _optional()
    match: dict[str, Any] | None = _optional(hash=False)
    ended_by: str | None = _optional()
    end_reason: str | None = _optional()


@attrs.frozen(kw_only=True)
class ToolInfo:
    """A tool the server offers (item of a server ``tool_list``)."""

    name: str
    description: str
    parameters: dict[str, Any] = _json()
    level: int


@attrs.frozen(kw_only=True)
class OfferedTool:
    """A tool a client runs itself (item of a client ``tool_list``); ``level`` is only the
    client's suggestion."""

    name: str
    description: str
    parameters: dict[str, Any] = _json()
    level: int | None = _optional()


@attrs.frozen(kw_only=True)
class ResourceInfo:
    """A readable host, as a URI template (``db://users/profile/{id}``)."""

    uri_template: str
    description: str


@attrs.frozen(kw_only=True)
class PendingActionInfo:
    """An action waiting for approval, as listed to someone who may answer it (``action_list``)."""

    action_id: str
    kind: ActionKind
    name: str
    arguments: dict[str, Any] = _json()
    level: int
    approver: Approver
    requester: str
    reason: str
    expires_in_s: float
    session_id: str | None = _optional()


@attrs.frozen(kw_only=True)
class MemoryInfo:
    """One thing an agent remembers about the caller (item of a server ``memory_list``)."""

    memory_id: str
    agent: str
    content: str
    created_at: float


# --- client → server -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AgentConnect:
    TYPE: ClassVar[str] = "agent_connect"
    id: str
    agent: str
    session_id: str | None = _optional()


@attrs.frozen(kw_only=True)
class UserMessage:
    TYPE: ClassVar[str] = "user_message"
    id: str
    session_id: str
    content: str
    # W3C trace context of the caller's span: the turn's spans continue its trace.
    traceparent: str | None = _optional()


@attrs.frozen(kw_only=True)
class ActionApproval:
    TYPE: ClassVar[str] = "action_approval"
    id: str
    action_id: str
    approved: bool
    reason: str | None = _optional()
    remember: Remember | None = _optional()


@attrs.frozen(kw_only=True)
class ClientAgentResult:
    """Result of a tool the client executed (``executor: client``)."""

    TYPE: ClassVar[str] = "agent_result"
    id: str
    action_id: str
    status: ResultStatus
    output: Any = _json()
    session_id: str | None = _optional()


@attrs.frozen(kw_only=True)
class ClientToolList:
    """``tools`` None (empty payload): asks for the server's list. A tuple (possibly
    empty): the tools this client offers, replacing its earlier offer."""

    TYPE: ClassVar[str] = "tool_list"
    id: str
    tools: tuple[OfferedTool, ...] | None = _optional()


@attrs.frozen(kw_only=True)
class ToolCall:
    TYPE: ClassVar[str] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = _json()
    session_id: str | None = _optional()
    traceparent: str | None = _optional()


@attrs.frozen(kw_only=True)
class ResourceRequest:
    TYPE: ClassVar[str] = "resource_request"
    id: str
    uri: str
    session_id: str | None = _optional()


@attrs.frozen(kw_only=True)
class AgentControl:
    TYPE: ClassVar[str] = "agent_control"
    id: str
    session_id: str
    command: AgentCommand


@attrs.frozen(kw_only=True)
class ActionListRequest:
    """Which actions wait for my approval? Answered by :class:`ActionList`."""

    TYPE: ClassVar[str] = "action_list"
    id: str


@attrs.frozen(kw_only=True)
class ResourceListRequest:
    TYPE: ClassVar[str] = "resource_list"
    id: str


@attrs.frozen(kw_only=True)
class GrantListRequest:
    """Which grants (remembered approvals) are there for me? Answered by :class:`GrantList`."""

    TYPE: ClassVar[str] = "grant_list"
    id: str
    session_id: str | None = _optional()
    all: bool | None = _optional()


@attrs.frozen(kw_only=True)
class GrantRevoke:
    """End a grant now; answered by :class:`GrantRevoked`."""

    TYPE: ClassVar[str] = "grant_revoke"
    id: str
    grant_id: str
    reason: str | None = _optional()


@attrs.frozen(kw_only=True)
class MemoryListRequest:
    """What do agents remember about me (of ``agent``, or of all)? Answered by :class:`MemoryList`."""

    TYPE: ClassVar[str] = "memory_list"
    id: str
    agent: str | None = _optional()


@attrs.frozen(kw_only=True)
class MemoryForget:
    """Delete my memory ``memory_id``, or (``all``) all of mine, of ``agent`` when given."""

    TYPE: ClassVar[str] = "memory_forget"
    id: str
    memory_id: str | None = _optional()
    all: bool | None = _optional()
    agent: str | None = _optional()


@attrs.frozen(kw_only=True)
class Feedback:
    """Rate one of my turns: ``rating`` 1 (good) or -1 (bad), with an optional ``comment``."""

    TYPE: ClassVar[str] = "feedback"
    id: str
    turn_id: str
    rating: int
    comment: str | None = _optional()


# --- server → client -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AgentState:
    TYPE: ClassVar[str] = "agent_state"
    id: str = attrs.field(factory=new_id)
    session_id: str
    agent: str
    state: LifecycleState
    reply_to: str | None = _optional()


@attrs.frozen(kw_only=True)
class ResponseToken:
    TYPE: ClassVar[str] = "response_token"
    id: str = attrs.field(factory=new_id)
    session_id: str
    turn_id: str
    token: str


@attrs.frozen(kw_only=True)
class AgentResponse:
    """``cancelled`` is True when the turn ended by ``agent_control`` ``cancel``; ``content``
    then holds what was answered before it."""

    TYPE: ClassVar[str] = "agent_response"
    id: str = attrs.field(factory=new_id)
    session_id: str
    turn_id: str
    content: str
    cancelled: bool | None = _optional()


@attrs.frozen(kw_only=True)
class AgentAction:
    """``session_id`` is None for a direct ``tool_call`` outside a session, which the
    action then answers (``reply_to``)."""

    TYPE: ClassVar[str] = "agent_action"
    id: str = attrs.field(factory=new_id)
    action_id: str
    kind: ActionKind
    name: str
    arguments: dict[str, Any] = _json()
    level: int
    requires_approval: bool
    approver: Approver
    executor: Executor
    reason: str
    session_id: str | None = _optional()
    reply_to: str | None = _optional()
    # Set when a grant (a remembered approval) covered the action: it ran without asking.
    grant: GrantRef | None = _optional()


@attrs.frozen(kw_only=True)
class AgentResult:
    TYPE: ClassVar[str] = "agent_result"
    id: str = attrs.field(factory=new_id)
    action_id: str
    status: ResultStatus
    output: Any = _json()
    session_id: str | None = _optional()
    reply_to: str | None = _optional()
    # MCP content blocks the tool returned (checked: engine/protocol/content.py); absent
    # otherwise.  ``output`` still holds what older clients read.
    content: list[dict[str, Any]] | None = _optional(hash=False)


@attrs.frozen(kw_only=True)
class ToolList:
    TYPE: ClassVar[str] = "tool_list"
    id: str = attrs.field(factory=new_id)
    tools: tuple[ToolInfo, ...]
    reply_to: str | None = _optional()


def _one_content(inst: ResourceResponse, _attr: attrs.Attribute[Any], _value: Any) -> None:
    if (inst.content is None) == (inst.content_base64 is None):
        raise ValueError("ResourceResponse needs exactly one of content, content_base64")


@attrs.frozen(kw_only=True)
class ResourceResponse:
    """Exactly one of ``content`` (text) and ``content_base64`` (bytes) is set; build it
    from data with :meth:`of`."""

    TYPE: ClassVar[str] = "resource_response"
    id: str = attrs.field(factory=new_id)
    uri: str
    mime_type: str
    truncated: bool
    reply_to: str
    content: str | None = _optional()
    content_base64: str | None = _optional(validator=_one_content)

    @classmethod
    def of(
        cls, *, uri: str, mime_type: str, data: str | bytes, truncated: bool, reply_to: str
    ) -> ResourceResponse:
        """Text goes into ``content``, bytes into ``content_base64``."""
        if isinstance(data, str):
            return cls(uri=uri, mime_type=mime_type, truncated=truncated, reply_to=reply_to,
                       content=data)
        return cls(uri=uri, mime_type=mime_type, truncated=truncated, reply_to=reply_to,
                   content_base64=base64.b64encode(data).decode("ascii"))


@attrs.frozen(kw_only=True)
class ResourceList:
    TYPE: ClassVar[str] = "resource_list"
    id: str = attrs.field(factory=new_id)
    resources: tuple[ResourceInfo, ...]
    reply_to: str


@attrs.frozen(kw_only=True)
class ActionList:
    TYPE: ClassVar[str] = "action_list"
    id: str = attrs.field(factory=new_id)
    actions: tuple[PendingActionInfo, ...]
    reply_to: str


@attrs.frozen(kw_only=True)
class GrantList:
    TYPE: ClassVar[str] = "grant_list"
    id: str = attrs.field(factory=new_id)
    grants: tuple[GrantInfo, ...]
    reply_to: str


@attrs.frozen(kw_only=True)
class MemoryList:
    TYPE: ClassVar[str] = "memory_list"
    id: str = attrs.field(factory=new_id)
    memories: tuple[MemoryInfo, ...]
    reply_to: str


@attrs.frozen(kw_only=True)
class GrantRevoked:
    TYPE: ClassVar[str] = "grant_revoke"
    id: str = attrs.field(factory=new_id)
    grant: GrantInfo
    reply_to: str


@attrs.frozen(kw_only=True)
class MemoryForgotten:
    TYPE: ClassVar[str] = "memory_forgotten"
    id: str = attrs.field(factory=new_id)
    forgotten: int
    reply_to: str


@attrs.frozen(kw_only=True)
class FeedbackRecorded:
    TYPE: ClassVar[str] = "feedback"
    id: str = attrs.field(factory=new_id)
    turn_id: str
    rating: int
    replaced: bool
    reply_to: str


@attrs.frozen(kw_only=True)
class ErrorFrame:
    TYPE: ClassVar[str] = "error"
    id: str = attrs.field(factory=new_id)
    code: ErrorCode
    message: str
    reply_to: str | None = None  # always on the wire, null when there was no id
    details: dict[str, Any] = _json(factory=dict)


ClientFrame = (
    AgentConnect
    | UserMessage
    | ActionApproval
    | ClientAgentResult
    | ClientToolList
    | ToolCall
    | ResourceRequest
    | AgentControl
    | ResourceListRequest
    | ActionListRequest
    | GrantListRequest
    | GrantRevoke
    | MemoryListRequest
    | MemoryForget
    | Feedback
)
ServerFrame = (
    AgentState
    | ResponseToken
    | AgentResponse
    | AgentAction
    | AgentResult
    | ToolList
    | ResourceResponse
    | ResourceList
    | ActionList
    | GrantList
    | GrantRevoked
    | ErrorFrame
    | MemoryList
    | MemoryForgotten
    | FeedbackRecorded
)
Frame = ClientFrame | ServerFrame
