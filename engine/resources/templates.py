"""Path templates of db://, api:// and static hosts: ``profile/{id}`` matched against a path, typed.

An empty template stands for the host's own URI (``test://static-text``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ..config.yamldoc import Document
from ..errors import ConfigProblem
from .content import Template
from .errors import BadURI, NotFound

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def match_template(template: str, segments: tuple[str, ...], types: Mapping[str, str]) -> dict[str, Any] | None:
    """The typed values of ``template``'s placeholders for this path, or None when it does not match.

    A placeholder matches one whole segment; a value that does not parse as its
    declared type (``integer``, ``number``) raises :class:`BadURI`.
    """
    stripped = template.strip("/")
    parts = stripped.split("/") if stripped else []
    if len(parts) != len(segments):
        return None
    values: dict[str, Any] = {}
    for part, segment in zip(parts, segments, strict=True):
        placeholder = _PLACEHOLDER.fullmatch(part)
        if placeholder is None:
            if part != segment:
                return None
            continue
        name = placeholder[1]
        values[name] = _typed(name, segment, types.get(name, "string"))
    return values


def _typed(name: str, value: str, kind: str) -> Any:
    try:
        if kind == "integer":
            if not re.fullmatch(r"-?\d{1,18}", value):
                raise ValueError
            return int(value)
        if kind == "number":
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError
            return number
    except ValueError:
        article = "an" if kind == "integer" else "a"
        raise BadURI(f"{name}: {value!r} is not {article} {kind}") from None
    return value


class _Routed(Protocol):
    # Read-only: the config's frozen attrs classes satisfy it.
    @property
    def path(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def params(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=_Routed)


def host_templates(key: str, routes: Sequence[_Routed], fallback: str) -> list[Template]:
    """The URI templates a db:// or api:// host serves, one per query or route."""
    return [Template(f"{key}/{route.path.strip('/')}" if route.path.strip("/") else key,
                     route.description or fallback, key)
            for route in routes]


def route_for(key: str, routes: Sequence[R], segments: tuple[str, ...]) -> tuple[R, dict[str, Any]]:
    """The first query or route whose template matches the path, with its typed values."""
    for route in routes:
        values = match_template(route.path, segments, route.params)
        if values is not None:
            return route, values
    raise NotFound(f"{key}/{'/'.join(segments)}: no template of {key} matches this path")


def check_template(
    doc: Document, where: list[Any], path: str, params: Mapping[str, str], used: set[str]
) -> list[ConfigProblem]:
    """Config problems of one path template: placeholders used but not declared, or typed but absent."""
    problems = []
    declared = set(_PLACEHOLDER.findall(path))
    for name in sorted(used - declared):
        problems.append(doc.problem(where, f"{name!r} is used but is not a {{placeholder}} of path {path!r}"))
    for name in sorted(set(params) - declared):
        problems.append(doc.problem([*where, "params", name], f"{name!r} is not a {{placeholder}} of path {path!r}"))
    return problems
