"""The ``echo`` model provider: answers every message with the message itself, after a prefix."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Literal

import attrs
import trio

from engine.config.model_providers import ModelProvider
from engine.models.base import Message, TextDelta, ToolCall, ToolDefinition


@attrs.frozen
class EchoModel:
    provider: Literal["echo"]
    prefix: str = "You said: "


class EchoProvider:
    def __init__(self, config: EchoModel) -> None:
        self.config = config

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        await trio.lowlevel.checkpoint()
        said = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        yield TextDelta(f"{self.config.prefix}{said}")


SCHEMA = {"properties": {"prefix": {"type": "string", "description": "Put before the echo. Default: 'You said: '."}}}

PROVIDER = ModelProvider(
    name="echo", config_class=EchoModel, schema=SCHEMA, model=EchoProvider, summary="echo (repeats the user)",
)
