"""The built-in ``rules`` model: deterministic, offline, declared in the agent's YAML.

Each step looks at the conversation's end:

- after a user message, the first rule whose ``match`` is found in it wins: a
  rule with a tool asks for that tool (arguments filled from the named groups),
  a rule without one answers; no match gives the ``fallback``;
- after the tool's result, the same rule's ``answer`` is rendered with
  ``{result...}`` taken from the tool's output, or the failure is explained.

Answers stream token by token, so clients see the same flow as with a real model.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import trio
import trio.lowlevel

from ..config.checks import rules_problems, rules_use_problems
from ..config.model import Rule, RulesModel
from ..config.model_providers import ModelProvider, register
from ..linear_re import compile_linear
from . import template
from .base import READ_RESOURCE, Message, TextDelta, ToolCall, ToolDefinition

_TOKEN = re.compile(r"\s*\S+|\s+")
_call_ids = itertools.count(1)


class RulesProvider:
    def __init__(self, config: RulesModel) -> None:
        self._config = config
        # RE2: a rule is matched against whatever a user sends, in time linear in its length.
        self._compiled = [(compile_linear(rule.match), rule) for rule in config.rules]

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        offered = {tool.name: tool for tool in tools}
        user_text = _last_user_text(messages)
        found = self._match(user_text)
        if messages and messages[-1].get("role") == "tool":
            answer = self._after_tool(found, messages[-1])
        elif found is None:
            answer = self._config.fallback
        else:
            rule, groups = found
            if rule.resource is not None:
                call = _resource_call(rule, groups, offered)
                if call is not None:
                    yield call
                    return
                answer = "I would read a resource for this, but I cannot read resources right now."
            elif rule.tool is None:
                answer = _render_or_explain(rule.answer, groups)
            elif rule.tool not in offered:
                answer = f"I would use the tool {rule.tool!r}, but it is not available to me right now."
            else:
                yield ToolCall(
                    id=f"call_{next(_call_ids)}",
                    name=rule.tool,
                    arguments=_arguments(rule, groups, offered[rule.tool]),
                )
                return
        for match in _TOKEN.finditer(answer):
            yield TextDelta(match.group())
            await trio.lowlevel.checkpoint()

    def _match(self, text: str) -> tuple[Rule, dict[str, Any]] | None:
        for pattern, rule in self._compiled:
            found = pattern.search(text)
            if found:
                groups = {name: value for name, value in found.groupdict().items() if value is not None}
                return rule, {name: value.strip() for name, value in groups.items()}
        return None

    def _after_tool(self, found: tuple[Rule, dict[str, Any]] | None, message: Message) -> str:
        outcome = _parse_tool_message(message.get("content", ""))
        status = outcome.get("status", "ok")
        if status != "ok":
            reason = outcome.get("reason") or outcome.get("output") or status
            name = message.get("name", "")
            what = "read that resource" if name == READ_RESOURCE else f"use the tool {name!r}"
            return f"I could not {what}: {template.as_text(reason)}".rstrip()
        if found is None:
            return template.as_text(outcome.get("output"))
        rule, groups = found
        return _render_or_explain(rule.answer, {**groups, "result": outcome.get("output")})


def _resource_call(rule: Rule, groups: Mapping[str, Any], offered: Mapping[str, ToolDefinition]) -> ToolCall | None:
    if READ_RESOURCE not in offered or rule.resource is None:
        return None
    try:
        uri = template.render(rule.resource, groups)
    except template.Missing:
        return None
    return ToolCall(id=f"call_{next(_call_ids)}", name=READ_RESOURCE, arguments={"uri": uri})


def _render_or_explain(text: str, context: Mapping[str, Any]) -> str:
    try:
        return template.render(text, context)
    except template.Missing as missing:
        result = context.get("result")
        shown = template.as_text(result) if result is not None else ""
        return f"(the answer template needs {{{missing}}}, which is missing) {shown}".strip()


def _arguments(rule: Rule, groups: Mapping[str, Any], tool: ToolDefinition) -> dict[str, Any]:
    """Fill argument templates; an argument whose group did not take part is left out.

    A value that is exactly one placeholder is converted to the parameter's
    declared JSON type, so ``amount: '{amount}'`` reaches a ``number`` as 20.5.
    """
    properties = tool.parameters.get("properties", {})
    filled: dict[str, Any] = {}
    for name, value in rule.arguments.items():
        if not isinstance(value, str):
            filled[name] = value
            continue
        try:
            text = template.render(value, groups)
        except template.Missing:
            continue
        wanted = properties.get(name, {}).get("type") if template.sole_field(value) else None
        filled[name] = _convert(text, wanted)
    return filled


def _convert(text: str, wanted: Any) -> Any:
    try:
        if wanted == "integer":
            return int(text)
        if wanted == "number":
            number = float(text)
            return int(number) if number.is_integer() and "." not in text else number
        if wanted == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    except ValueError:
        pass
    return text


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def _parse_tool_message(content: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(content) if isinstance(content, str) else content
    except ValueError:
        return {"status": "ok", "output": content}
    if isinstance(parsed, dict) and "status" in parsed:
        return parsed
    return {"status": "ok", "output": parsed}


# --- the provider, registered (engine/config/model_providers.py) -----------------------

SCHEMA: Mapping[str, Any] = {
    "properties": {
        "fallback": {"type": "string", "description": "Answer when no rule matches."},
        "rules": {
            "type": "array",
            "description": "Tried in order; the first whose pattern is found in the message wins.",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["match", "answer"],
                "not": {"required": ["tool", "resource"]},
                "properties": {
                    "match": {"type": "string", "minLength": 1, "description": "Regular expression searched in "
                              "the user's message; named groups become {placeholders}."},
                    "tool": {"type": "string", "minLength": 1,
                             "description": "Tool to call; one of the agent's tools or client_tools."},
                    "resource": {"type": "string", "pattern": "^(file|db|api|memory)://",
                                 "description": "Resource URI to read, with {group} placeholders; its host must "
                                 "be one of the agent's resources."},
                    "arguments": {"type": "object",
                                  "description": "Tool arguments; string values may use {group} placeholders."},
                    "answer": {"type": "string", "description": "Reply template: {group} placeholders and "
                               "{result.field} from the tool's output."},
                },
            },
        },
    },
}

PROVIDER = register(ModelProvider(
    name="rules", config_class=RulesModel, schema=SCHEMA, model=RulesProvider, summary="rules (built in, offline)",
    check=rules_problems, check_use=rules_use_problems,
))
