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

_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "$schema", "$id", "$defs"})

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
        value = node[key]
        if key == "type":
            types = [value] if isinstance(value, str) else list(value)
            preds = [_TYPES[t] for t in types]
            checks.append(preds[0] if len(preds) == 1 else (lambda x, p=preds: any(f(x) for f in p)))
        elif key == "const":
            checks.append(lambda x, v=value: type(x) is type(v) and x == v)
        elif key == "enum":
            if not all(isinstance(v, str) for v in value):
                raise ValueError("only string enums are supported")
            allowed = frozenset(value)
            checks.append(lambda x, a=allowed: type(x) is str and x in a)
        elif key == "minLength":
            checks.append(lambda x, n=value: type(x) is not str or len(x) >= n)
        elif key == "maxLength":
            checks.append(lambda x, n=value: type(x) is not str or len(x) <= n)
        elif key == "pattern":
            # re.search, like jsonschema, so both agree on what the pattern means.
            search = re.compile(value).search
            checks.append(lambda x, s=search: type(x) is not str or s(x) is not None)
        elif key == "minimum":
            checks.append(lambda x, n=value: type(x) not in (int, float) or x >= n)
        elif key == "maximum":
            checks.append(lambda x, n=value: type(x) not in (int, float) or x <= n)
        elif key == "maxItems":
            checks.append(lambda x, n=value: type(x) is not list or len(x) <= n)
        elif key == "items":
            item = compile_check(value, defs)
            checks.append(lambda x, c=item: type(x) is not list or all(c(i) for i in x))
        elif key == "anyOf":
            alts = [compile_check(v, defs) for v in value]
            checks.append(lambda x, a=alts: any(c(x) for c in a))
        elif key == "oneOf":
            alts = [compile_check(v, defs) for v in value]
            checks.append(lambda x, a=alts: sum(1 for c in a if c(x)) == 1)
        else:
            raise ValueError(f"schema keyword {key!r} is not supported by the fast checker")

    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    return lambda x, cs=tuple(checks): all(c(x) for c in cs)


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
