"""A fast yes/no validator compiled from the protocol schema, for the hot path.

jsonschema walks a schema through generic machinery (evolve/descend per keyword and per
``$ref``) and costs 30–50 µs for a small frame — most of the per-frame budget. Here the
schema is compiled once into nested closures for the keywords the protocol schema uses
(and a few more that tool parameter schemas use); an unsupported keyword is a
``ValueError`` at compile time, never silently skipped.

Contract: ``check(x)`` is jsonschema's verdict on ``x``, exactly, for the keywords it
supports (exactly, not merely "never more lenient": under ``oneOf`` a branch that
wrongly said no would let the whole say yes). The decoder trusts True; on False it
runs jsonschema, which stays the authority for refusals and their messages. The
test-suite checks agreement on many valid and mutated frames, and on tool schemas.

``pattern``: the caller says which regular expression engine the validator it stands
in for uses (``search_with``); tool arguments are matched with RE2
(engine.server.argcheck), which never backtracks, protocol frames with ``re``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_check"]

Check = Callable[[Any], bool]
# A pattern's compiled search: text -> a match or None.
Search = Callable[[str], object]

_ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "examples", "default", "$schema", "$id", "$defs"}
)

_TYPES: dict[str, Check] = {
    "object": lambda x: type(x) is dict,
    "array": lambda x: type(x) is list,
    "string": lambda x: type(x) is str,
    "boolean": lambda x: type(x) is bool,
    # JSON Schema's integer is a number with no fraction: 1.0 is one (a bool is not).
    "integer": lambda x: type(x) is int or (type(x) is float and x.is_integer()),
    "number": lambda x: type(x) is int or type(x) is float,
    "null": lambda x: x is None,
}


def _always(_x: Any) -> bool:
    return True


def _re_search(pattern: str) -> Search:
    return re.compile(pattern).search


def compile_check(
    node: Mapping[str, Any] | bool, defs: Mapping[str, Any], *, search_with: Callable[[str], Search] = _re_search
) -> Check:
    """Compile ``node`` (``$ref``s resolved against ``defs``) into a predicate.

    ``search_with(pattern)`` compiles a ``pattern`` keyword's expression as the validator
    this stands in for does.  Raises ``ValueError`` for a keyword or a form it does not
    support (the caller then validates with jsonschema alone).
    """
    return _Compiler(node, defs, search_with).compile(node)


class _Compiler:
    def __init__(self, root: Any, defs: Mapping[str, Any], search_with: Callable[[str], Search]) -> None:
        self.root = root
        self.defs = defs
        self.search_with = search_with

    def compile(self, node: Any) -> Check:
        if node is True:
            return _always
        if node is False:
            return _never
        if not isinstance(node, Mapping):
            raise ValueError(f"a schema is an object or a boolean, not {type(node).__name__}")
        if node is not self.root and ("$id" in node or "$schema" in node):
            raise ValueError("$id and $schema are supported only at the root (they change how $refs resolve)")
        if "$ref" in node:
            if len(node) != 1:
                raise ValueError("$ref with sibling keywords is not supported")
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/$defs/") or ref[8:] not in self.defs:
                raise ValueError(f"$ref {ref!r} is not supported (only #/$defs/NAME)")
            return self.compile(self.defs[ref[8:]])

        checks: list[Check] = []
        keys = set(node) - _ANNOTATIONS
        obj_keys = {"properties", "required", "additionalProperties"}
        if keys & obj_keys:
            checks.append(_object(node, self))
            keys -= obj_keys
        for key in sorted(keys):
            maker = _KEYWORDS.get(key)
            if maker is None:
                raise ValueError(f"schema keyword {key!r} is not supported by the fast checker")
            checks.append(maker(node[key], self))

        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        every = tuple(checks)
        return lambda x: all(c(x) for c in every)


def _never(_x: Any) -> bool:
    return False


def _type(value: str | list[str], _c: _Compiler) -> Check:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(t, str) and t in _TYPES for t in names):
        raise ValueError(f"type {value!r} is not supported")
    preds = [_TYPES[t] for t in names]
    if len(preds) == 1:
        return preds[0]
    return lambda x: any(f(x) for f in preds)


def _const(value: Any, _c: _Compiler) -> Check:
    # JSON Schema equality: a boolean is never a number, 1 equals 1.0. Scalars only: inside a
    # list or an object Python's == would say True == 1.
    if value is None or type(value) is bool:
        return lambda x: x is value
    if type(value) is str:
        return lambda x: type(x) is str and x == value
    if type(value) in (int, float):
        return lambda x: type(x) in (int, float) and x == value
    raise ValueError("only scalar consts are supported")


def _enum(value: list[Any], _c: _Compiler) -> Check:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("only string enums are supported")
    allowed = frozenset(value)
    return lambda x: type(x) is str and x in allowed


def _min_length(n: int, _c: _Compiler) -> Check:
    n = _count(n)
    return lambda x: type(x) is not str or len(x) >= n


def _max_length(n: int, _c: _Compiler) -> Check:
    n = _count(n)
    return lambda x: type(x) is not str or len(x) <= n


def _pattern(value: str, c: _Compiler) -> Check:
    # Searched (not matched in full) like jsonschema, with the engine the caller names.
    if not isinstance(value, str):
        raise ValueError("pattern must be a string")
    try:
        search = c.search_with(value)
    except Exception as exc:  # whatever the engine raises for an expression it cannot compile
        raise ValueError(f"pattern {value!r}: {exc}") from None
    return lambda x: type(x) is not str or search(x) is not None


def _number(n: Any) -> float:
    if type(n) not in (int, float):
        raise ValueError(f"{n!r} is not a number")
    return n  # type: ignore[no-any-return]


def _count(n: Any) -> int:
    if type(n) is not int or n < 0:
        raise ValueError(f"{n!r} is not a count")
    return n  # type: ignore[no-any-return]


def _minimum(n: float, _c: _Compiler) -> Check:
    n = _number(n)
    return lambda x: type(x) not in (int, float) or x >= n


def _maximum(n: float, _c: _Compiler) -> Check:
    n = _number(n)
    return lambda x: type(x) not in (int, float) or x <= n


def _exclusive_minimum(n: float, _c: _Compiler) -> Check:
    n = _number(n)
    return lambda x: type(x) not in (int, float) or x > n


def _exclusive_maximum(n: float, _c: _Compiler) -> Check:
    n = _number(n)
    return lambda x: type(x) not in (int, float) or x < n


def _min_items(n: int, _c: _Compiler) -> Check:
    n = _count(n)
    return lambda x: type(x) is not list or len(x) >= n


def _max_items(n: int, _c: _Compiler) -> Check:
    n = _count(n)
    return lambda x: type(x) is not list or len(x) <= n


def _items(value: Mapping[str, Any], c: _Compiler) -> Check:
    item = c.compile(value)
    return lambda x: type(x) is not list or all(item(i) for i in x)


def _branches(value: Any, c: _Compiler) -> list[Check]:
    if not isinstance(value, list) or not value:
        raise ValueError("anyOf/oneOf must be a non-empty list")
    return [c.compile(v) for v in value]


def _any_of(value: list[Mapping[str, Any]], c: _Compiler) -> Check:
    alts = _branches(value, c)
    return lambda x: any(c(x) for c in alts)


def _one_of(value: list[Mapping[str, Any]], c: _Compiler) -> Check:
    alts = _branches(value, c)
    return lambda x: sum(1 for c in alts if c(x)) == 1


_KEYWORDS: dict[str, Callable[[Any, _Compiler], Check]] = {
    "type": _type,
    "const": _const,
    "enum": _enum,
    "minLength": _min_length,
    "maxLength": _max_length,
    "pattern": _pattern,
    "minimum": _minimum,
    "maximum": _maximum,
    "exclusiveMinimum": _exclusive_minimum,
    "exclusiveMaximum": _exclusive_maximum,
    "minItems": _min_items,
    "maxItems": _max_items,
    "items": _items,
    "anyOf": _any_of,
    "oneOf": _one_of,
}


def _object(node: Mapping[str, Any], c: _Compiler) -> Check:
    properties = node.get("properties", {})
    required = node.get("required", [])
    if not isinstance(properties, Mapping) or not isinstance(required, list) or \
            not all(isinstance(name, str) for name in required):
        raise ValueError("properties must be an object and required a list of names")
    props = {k: c.compile(v) for k, v in properties.items()}
    required = tuple(required)
    extra = node.get("additionalProperties", True)
    if extra is not True and extra is not False:
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
