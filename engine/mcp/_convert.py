"""Our results as MCP results: tool entries, call results, resource contents, protocol errors.

Shared by the HTTP front door (which has the engine's outcomes) and the stdio bridge
(which has our protocol's frames): both reduce to a status, an output and a reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from ..protocol import Remember, RememberScope
from ..protocol import content as blocks
from ._held import StillWaiting, describe

_BLOCK_TYPES: dict[str, Any] = {
    "text": types.TextContent,
    "image": types.ImageContent,
    "audio": types.AudioContent,
    "resource": types.EmbeddedResource,
    "resource_link": types.ResourceLink,
}

# How much of a failed tool's stderr an MCP client is shown (the audit log keeps its own).
STDERR_TAIL_CHARS = 2000


def tool_entry(name: str, description: str, parameters: Mapping[str, Any]) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=dict(parameters))


def content_block(block: Mapping[str, Any]) -> types.ContentBlock:
    """One of our checked content blocks (engine/protocol/content.py) as the SDK's type."""
    model = _BLOCK_TYPES[str(block["type"])]
    return model.model_validate(dict(block))  # type: ignore[return-value]


def call_result(
    status: str, output: Any, reason: str = "", content: Sequence[Mapping[str, Any]] | None = None
) -> types.CallToolResult:
    """A finished action: ``ok`` is its output (or its content blocks); anything else is
    ``isError`` with why (and stderr)."""
    if status == "ok" and content:
        return types.CallToolResult(
            content=[content_block(block) for block in content],
            structured_content=blocks.structured_part(output, content),
        )
    if status == "ok":
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
        structured = dict(output) if isinstance(output, Mapping) else None
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)
    error = output.get("error") if isinstance(output, Mapping) else None
    lines = [f"{status}: {reason or error or status}"]
    stderr = output.get("stderr") if isinstance(output, Mapping) else None
    if stderr:
        lines.append("stderr:\n" + str(stderr)[-STDERR_TAIL_CHARS:])
    structured = {"status": status, **(dict(output) if isinstance(output, Mapping) else {"output": output})}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text="\n".join(lines))], structured_content=structured, is_error=True
    )


def pending_result(waiting: StillWaiting) -> types.CallToolResult:
    """The budget ran out: say what it waits for and how to get the outcome."""
    structured = {"status": "pending", "action_id": waiting.action_id, "waiting_for": waiting.phase.value}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=describe(waiting))], structured_content=structured, is_error=True
    )


def unknown_tool(name: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


def invalid_arguments(name: str, problems: list[str]) -> MCPError:
    shown = "; ".join(problems[:5])
    return MCPError(types.INVALID_PARAMS, f"invalid arguments for {name}: {shown}", data={"problems": problems})


def resource_error(uri: str, code: str, message: str) -> MCPError:
    """Not found, a bad URI and a refused read are the caller's to fix (-32602); the rest is ours."""
    if code in ("not_found", "bad_uri", "forbidden", "invalid_arguments"):
        text = f"Resource not found: {uri}" if code == "not_found" else f"{code}: {message}"
        return MCPError(types.INVALID_PARAMS, text, data={"uri": uri, "code": code, "message": message})
    return MCPError(types.INTERNAL_ERROR, f"{code}: {message}", data={"uri": uri, "code": code})


def resource_contents(uri: str, mime_type: str, data: str | bytes) -> types.ReadResourceResult:
    item: types.TextResourceContents | types.BlobResourceContents
    if isinstance(data, str):
        item = types.TextResourceContents(uri=uri, mime_type=mime_type, text=data)
    else:
        item = types.BlobResourceContents(uri=uri, mime_type=mime_type, blob=base64.b64encode(data).decode("ascii"))
    return types.ReadResourceResult(contents=[item])


def template_entry(uri_template: str, description: str) -> types.ResourceTemplate:
    return types.ResourceTemplate(name=uri_template, uri_template=uri_template, description=description)


def resource_entry(uri: str, description: str) -> types.Resource:
    return types.Resource(name=uri, uri=uri, description=description)


#: The elicitation's "remember" choices: this call only, or the same call for a while (a grant).
REMEMBER_CHOICES = ("this call only", "15m", "1h", "8h")


def approval_form(
    action_id: str, name: str, arguments: Any, level: int, *, remember: bool = False
) -> tuple[str, dict[str, Any]]:
    """The elicitation that asks the caller to approve their own level-1 action; with
    ``remember``, it also offers to run the same call without asking for a while."""
    shown = json.dumps(arguments, ensure_ascii=False, default=str)
    if len(shown) > 500:
        shown = shown[:497] + "..."
    message = f"Allow the tool {name} (level {level}) to run with {shown}? (action {action_id})"
    properties: dict[str, Any] = {
        "approve": {"type": "boolean", "title": "Run it", "description": "true runs the tool"},
    }
    if remember:
        properties["remember"] = {
            "type": "string", "title": "Remember", "enum": list(REMEMBER_CHOICES), "default": REMEMBER_CHOICES[0],
            "description": "Also run this same call (same arguments) without asking for this long, "
                           "as far as the policy allows",
        }
    schema = {"type": "object", "properties": properties, "required": ["approve"]}
    return message, schema


def remember_choice(content: Any) -> Remember | None:
    """The grant an accepted approval form asks for, None for "this call only" (or anything else)."""
    value = content.get("remember") if isinstance(content, Mapping) else None
    if isinstance(value, str) and value in REMEMBER_CHOICES[1:]:
        return Remember(scope=RememberScope.DURATION, duration=value)
    return None
