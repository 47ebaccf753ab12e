"""The model interface: messages and tool definitions in, a stream of deltas and calls out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ..config.model import ASK_AGENT
from ..errors import ScalyticsError


class ModelError(ScalyticsError):
    """A model step failed; the message says why, without secrets (it is shown to the user)."""


@attrs.frozen
class ToolDefinition:
    """A tool as a model sees it (chat-completions ``tools[].function``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


# The built-in tool through which any model reads resources (chat-completions has no
# resource concept); offered when the agent declares resource hosts.
READ_RESOURCE = "read_resource"
READ_RESOURCE_TOOL = ToolDefinition(
    name=READ_RESOURCE,
    description="Read a resource by URI (file://, db://, api://) from the hosts this agent may read.",
    parameters={
        "type": "object",
        "properties": {"uri": {"type": "string", "description": "e.g. db://users/profile/42"}},
        "required": ["uri"],
        "additionalProperties": False,
    },
)


ASK_AGENT_TOOL = ToolDefinition(
    name=ASK_AGENT,
    description="Ask another agent (one of this agent's delegates) to do a sub-task; returns its answer.",
    parameters={
        "type": "object",
        "properties": {
            "agent": {"type": "string", "description": "The name of the agent to ask."},
            "message": {"type": "string", "minLength": 1, "maxLength": 20000, "description": "What to ask it."},
        },
        "required": ["agent", "message"],
        "additionalProperties": False,
    },
)


@attrs.frozen
class TextDelta:
    """A piece of the answer, sent to the client as it is produced."""

    text: str


@attrs.frozen
class ToolCall:
    """The model asks for a tool; ``arguments`` are parsed JSON, not yet validated."""

    id: str
    name: str
    arguments: Any


Message = Mapping[str, Any]


class Model(Protocol):
    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        """One model step. Cancelling the consumer cancels the step (no request outlives it)."""
        ...
