"""The ``{placeholder}`` templates of the rules model and of chain tools' steps.

``str.format`` syntax (``{{`` escapes a brace) but no attribute access or
indexing into Python objects: a field is a group name, or ``result`` followed
by dotted keys into the tool's JSON output (``{result.items.0.name}``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()


class Missing(LookupError):
    """A placeholder names something the context does not have."""


def lookup(field: str, context: Mapping[str, Any]) -> Any:
    head, *rest = field.split(".")
    if head not in context:
        raise Missing(field)
    value = context[head]
    for key in rest:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise Missing(field)
    return value


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Fill every placeholder; a missing one raises :class:`Missing`."""
    parts = []
    for literal, field, _spec, _conversion in _FORMATTER.parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(as_text(lookup(field, context)))
    return "".join(parts)


def sole_field(template: str) -> str | None:
    """The field name when the template is exactly one placeholder, else None."""
    parsed = list(_FORMATTER.parse(template))
    if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1]:
        return parsed[0][1]
    return None


def fill(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON value with every string's placeholders filled; raises :class:`Missing`.

    A string that is exactly one placeholder becomes the value it names, with
    its JSON type (a number stays a number); other strings are rendered as text.
    Mappings and lists are filled item by item.
    """
    if isinstance(value, str):
        sole = sole_field(value)
        return lookup(sole, context) if sole is not None else render(value, context)
    if isinstance(value, Mapping):
        return {key: fill(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [fill(item, context) for item in value]
    return value
