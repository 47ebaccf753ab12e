"""Tool arguments: the compiled fast check (engine.server.argcheck) never accepts what
jsonschema refuses, and refusals are worded by jsonschema as before.

- every shipped tool's schema compiles to a fast check, valid arguments take it, and
  for hundreds of mutated arguments (keys dropped or added, values of every JSON type
  in every place) its verdict is jsonschema's, exactly (under ``oneOf`` a branch that
  wrongly said no would make the whole say yes);
- hand-written schemas with the keywords it supports, and the forms it must not
  take on (a const holding a list, where Python's ``True == 1`` would lie; ``$id`` below the
  root; a recursive ``$ref``): the same agreement, or no fast check at all;
- a ``pattern`` is matched by RE2 on both paths: an expression only a backtracking
  engine runs gets no fast check;
- a refused call's problems read exactly as jsonschema words them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.config.loader import load_config
from engine.server import argcheck

ROOT = Path(__file__).resolve().parents[2]

_ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 2.5, 10**30, "", "x", "0123456789" * 60, [], [1], ["a"], {}, {"a": 1},
]


def _mutations(value: Any) -> list[Any]:
    """``value`` changed in one place each: every leaf and container swapped for odd values,
    object keys dropped, an unknown key added."""
    out: list[Any] = []

    def walk(path: list[Any], node: Any) -> None:
        for odd in _ODD_VALUES:
            out.append(_replaced(value, path, odd))
        if isinstance(node, dict):
            for key in list(node):
                dropped = copy.deepcopy(value)
                target = dropped
                for part in path:
                    target = target[part]
                del target[key]
                out.append(dropped)
                walk([*path, key], node[key])
            out.append(_replaced(value, path, {**node, "unexpected": 1}))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk([*path, index], item)

    walk([], value)
    return out


def _replaced(value: Any, path: list[Any], new: Any) -> Any:
    if not path:
        return copy.deepcopy(new)
    changed = copy.deepcopy(value)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = copy.deepcopy(new)
    return changed


def _agrees(schema: dict[str, Any], instances: list[Any]) -> int:
    """Assert that the fast check's verdict is jsonschema's on every instance; returns how many
    it accepted."""
    fast = argcheck._fast_check(schema)
    assert fast is not None, schema
    validator = argcheck.BoundedValidator(schema, format_checker=argcheck.FORMATS)
    accepted = 0
    for instance in instances:
        verdict = fast(instance)
        assert verdict == validator.is_valid(instance), (schema, instance, verdict)
        accepted += verdict
    return accepted


def _example(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments meeting a simple tool schema: each property its shortest valid value."""
    out: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type")
        if "enum" in prop:
            out[name] = prop["enum"][0]
        elif kind == "string":
            out[name] = "a" * max(1, prop.get("minLength", 1))
        elif kind in ("integer", "number"):
            out[name] = prop.get("minimum", 1)
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
    return out


def test_shipped_tool_schemas_take_the_fast_path_and_agree_with_jsonschema() -> None:
    config = load_config(ROOT)
    checked = 0
    for tool in config.tools.values():
        schema = tool.parameters
        fast = argcheck._fast_check(schema)
        if fast is None:
            continue
        example = _example(schema)
        validator = argcheck.BoundedValidator(schema, format_checker=argcheck.FORMATS)
        if validator.is_valid(example):
            assert fast(example), (tool.name, example)  # valid arguments take the fast path
        _agrees(schema, [example, *_mutations(example)])
        checked += 1
    assert checked >= 5  # most shipped tools have schemas the fast check knows


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5},
                                       "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
      "required": ["n"], "additionalProperties": False},
     {"n": 3, "x": 0.5}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                                "minItems": 1, "maxItems": 2}}},
     {"tags": ["ab"]}),
    # oneOf over integer and number: 1.0 is both (an integer to JSON Schema), so neither one.
    ({"type": "object", "properties": {"mode": {"enum": ["a", "b"]}, "flag": {"const": True}, "one": {"const": 1},
                                       "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                       "which": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}},
     {"mode": "a", "flag": True, "one": 1.0, "either": None, "which": 1.5}),
    ({"type": "object", "$defs": {"name": {"type": "string", "pattern": "^[a-z]+$"}},
      "properties": {"who": {"$ref": "#/$defs/name"}, "any": True, "none": False}},
     {"who": "abc", "any": [1]}),
]


@pytest.mark.parametrize(("schema", "valid"), CASES)
def test_hand_written_schemas_agree_with_jsonschema(schema: dict[str, Any], valid: dict[str, Any]) -> None:
    assert argcheck.BoundedValidator(schema).is_valid(valid)
    assert _agrees(schema, [valid, *_mutations(valid)]) > 1


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"v": {"const": [1]}}},  # [True] == [1] in Python, not in JSON Schema
    {"type": "object", "properties": {"v": {"$id": "https://example.com/x", "type": "string"}}},
    {"type": "object", "properties": {"v": {"$ref": "#/properties/w"}}, "$defs": {}},
    {"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "$ref": "#/$defs/loop"},
    {"type": "object", "properties": {"v": {"type": "string", "format": "email"}}},
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(a)\\1$"}}},  # RE2 has no backreferences
])
def test_forms_it_cannot_judge_exactly_get_no_fast_check(schema: dict[str, Any]) -> None:
    assert argcheck._fast_check(schema) is None


async def test_a_refusal_is_worded_by_jsonschema_as_before() -> None:
    schema = {"type": "object", "properties": {"expression": {"type": "string", "minLength": 1}},
              "required": ["expression"], "additionalProperties": False}
    assert argcheck._fast_check(schema) is not None
    assert await argcheck.tool_argument_problems(schema, {"expression": "1+1"}, trusted_schema=True) == []
    problems = await argcheck.tool_argument_problems(schema, {"expression": "", "x": 1}, trusted_schema=True)
    assert problems == ["arguments: Additional properties are not allowed ('x' was unexpected)",
                        "expression: '' should be non-empty"]

