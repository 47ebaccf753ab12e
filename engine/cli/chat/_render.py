"""Results made readable: a tool's text output as text, a dict as indented ``key: value`` lines.

Every function returns lines already made printable (control characters escaped).
"""

from __future__ import annotations

import json
from typing import Any

from ._output import shown, shown_body

# A long value is cut: the chat is for reading, --json gives everything.
_MAX_LINES = 200


def compact(value: Any) -> str:
    """JSON on one line (arguments in an action line), printable."""
    return shown(json.dumps(value, ensure_ascii=False, default=str))


def value_lines(value: Any, indent: str = "  ") -> list[str]:
    """``value`` as readable lines, each starting with ``indent``."""
    lines = _lines(value, indent)
    if len(lines) > _MAX_LINES:
        lines = [*lines[:_MAX_LINES], f"{indent}... ({len(lines) - _MAX_LINES} more lines; --json shows all)"]
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return shown(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _lines(value: Any, indent: str) -> list[str]:
    if isinstance(value, str):
        return [indent + line for line in shown_body(value).rstrip("\n").split("\n")] if value else [f"{indent}(empty)"]
    if isinstance(value, dict):
        if not value:
            return [f"{indent}(empty)"]
        out: list[str] = []
        for key, item in value.items():
            label = f"{indent}{shown(str(key))}:"
            if isinstance(item, dict | list) and item:
                out += [label, *_lines(item, indent + "  ")]
            elif isinstance(item, str) and "\n" in item.rstrip("\n"):
                out += [label, *_lines(item, indent + "  ")]
            else:
                out.append(f"{label} {_scalar(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [f"{indent}(none)"]
        out = []
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _lines(item, indent + "  ")
                out += [f"{indent}- {nested[0].lstrip()}", *nested[1:]]
            else:
                out.append(f"{indent}- {_scalar(item)}")
        return out
    return [indent + _scalar(value)]


def error_text(output: Any) -> str:
    """Why an action failed, in one line (the ``error`` of its output, with any problems)."""
    if isinstance(output, dict):
        text = str(output.get("error", "") or compact(output))
        problems = output.get("problems")
        if isinstance(problems, list) and problems:
            text += " (" + "; ".join(map(str, problems)) + ")"
        return shown(text)
    return compact(output)


def short(identifier: str | None) -> str:
    """The first 8 characters of an id: enough to name it in /approve, short enough to read."""
    return shown((identifier or "")[:8])
