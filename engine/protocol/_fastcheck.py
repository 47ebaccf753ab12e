"""A fast yes/no validator compiled from the protocol schema, for the hot path.

jsonschema walks a schema through generic machinery (evolve/descend per keyword and per
``$ref``) and costs 30–50 µs for a small frame — most of the per-frame budget. Here the
schema is compiled once into nested closures for the keywords the protocol schema uses;
an unsupported keyword is an error at import, never silently skipped.

Contract: ``check(x)`` is True only if jsonschema would find ``x`` valid (it may be
stricter: e.g. it refuses ``1.0`` for ``integer``). The decoder trusts True; on False it
runs jsonschema, which stays the authority for refusals and their messages, so a
stricter answer here costs time on an invalid frame but never changes a verdict. The
test-suite checks agreement on many valid and mutated frames.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_check"]

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "examples", "default", "$schema", "$id", "$defs"}
)

_TYPES: dict[str, Check] = {
    "object": lambda x: type(x) is dict,
    "array": lambda x: type(x) is list,
    "string": lambda x: type(x) is str,
    "boolean": lambda x: type(x) is bool,
    "integer": lambda x: type(x) is int,
    "number": lambda x: type(x) is int or type(x) is float,
    "null": lambda x: x is None,
}


def _always(_x: Any) -> bool:
    return True


def compile_check(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Check:
    """Compile ``node`` (``$ref``s resolved against ``defs``) into a predicate."""
    if "$ref" in node:
        if len(node) != 1:
            raise ValueError("$ref with sibling keywords is not supported")
        return compile_check(defs[node["$ref"].removeprefix("#/$defs/")], defs)

    checks: list[Check] = []
    keys = set(node) - _ANNOTATIONS
    obj_keys = {"properties", "required", "additionalProperties"}
    if keys & obj_keys:
        checks.append(_object(node, defs))
        keys -= obj_keys
    for key in sorted(keys):
        maker = _KEYWORDS.get(key)
        if maker is None:
            raise ValueError(f"schema keyword {key!r} is not supported by the fast checker")
        checks.append(maker(node[key], defs))

    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    every = tuple(checks)
    return lambda x: all(c(x) for c in every)


def _type(value: str | list[str], _defs: Mapping[str, Any]) -> Check:
    preds = [_TYPES[t] for t in ([value] if isinstance(value, str) else value)]
    if len(preds) == 1:
        return preds[0]
    return lambda x: any(f(x) for f in preds)


def _const(value: Any, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) is type(value) and x == value


def _enum(value: list[Any], _defs: Mapping[str, Any]) -> Check:
    if not all(isinstance(v, str) for v in value):
        raise ValueError("only string enums are supported")
    allowed = frozenset(value)
    return lambda x: type(x) is str and x in allowed


def _min_length(n: int, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) is not str or len(x) >= n


def _max_length(n: int, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) is not str or len(x) <= n


def _pattern(value: str, _defs: Mapping[str, Any]) -> Check:
    # re.search, like jsonschema, so both agree on what the pattern means.
    search = re.compile(value).search
    return lambda x: type(x) is not str or search(x) is not None


def _minimum(n: float, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) not in (int, float) or x >= n


def _maximum(n: float, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) not in (int, float) or x <= n


def _max_items(n: int, _defs: Mapping[str, Any]) -> Check:
    return lambda x: type(x) is not list or len(x) <= n


def _items(value: Mapping[str, Any], defs: Mapping[str, Any]) -> Check:
    item = compile_check(value, defs)
    return lambda x: type(x) is not list or all(item(i) for i in x)


def _any_of(value: list[Mapping[str, Any]], defs: Mapping[str, Any]) -> Check:
    alts = [compile_check(v, defs) for v in value]
    return lambda x: any(c(x) for c in alts)


def _one_of(value: list[Mapping[str, Any]], defs: Mapping[str, Any]) -> Check:
    alts = [compile_check(v, defs) for v in value]
    return lambda x: sum(1 for c in alts if c(x)) == 1


_KEYWORDS: dict[str, Callable[[Any, Mapping[str, Any]], Check]] = {
    "type": _type,
    "const": _const,
    "enum": _enum,
    "minLength": _min_length,
    "maxLength": _max_length,
    "pattern": _pattern,
    "minimum": _minimum,
    "maximum": _maximum,
    "maxItems": _max_items,
    "items": _items,
    "anyOf": _any_of,
    "oneOf": _one_of,
}


def _object(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Check:
    props = {k: compile_check(v, defs) for k, v in node.get("properties", {}).items()}
    required = tuple(node.get("required", ()))
    extra = node.get("additionalProperties", True)
    if extra not in (True, False):
        raise ValueError("additionalProperties must be true or false")

    def check(x: Any) -> bool:
        if type(x) is not dict:
            return True  # object keywords ignore non-objects; "type" decides
        for name in required:
            if name not in x:
                return False
        for name, value in x.items():
            pred = props.get(name)
            if pred is None:
                if not extra:
                    return False
            elif not pred(value):
                return False
        return True

    return check
