"""The JSON Schemas of the config kinds, shipped in ``schemas/``, and their validators.

Schema errors are turned into :class:`ConfigProblem` values located on the
offending YAML node.  jsonschema reports an unknown key on the parent object;
we move it to the key itself and suggest the nearest known key.

Whether a value is valid depends on the value and the schema only, and validating is
most of the cost of loading a file: the verdict is remembered by the value's canonical
JSON (every reload re-reads every file; ``check``, ``serve`` and the console load the
same files again).  A value that is not plain JSON data (a YAML date, a non-string
key) is validated every time.  Problems are never remembered: they name the file
and its lines, so an invalid value is validated again to list them.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterator
from importlib import resources
from types import NoneType
from typing import Any

import jsonschema
import referencing
from jsonschema.exceptions import ValidationError

from ..errors import ConfigProblem
from . import model_providers, tool_kinds
from .model_providers import model_block_schema
from .resource_kinds import resource_schema
from .yamldoc import Document, PathSegment

KINDS = ("model", "agent", "tool", "resource", "policy")
_JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def schema(name: str) -> dict[str, Any]:
    """The schema named ``name`` (a kind, or ``common``) as shipped in the package, completed
    by the registered kinds for ``resource`` and ``tool``."""
    if name in ("tool", "model", "agent"):
        # Each tool kind brings its own key (engine/config/tool_kinds.py), each model provider its
        # block (engine/config/model_providers.py); one registered later (a test's) changes the
        # generation, and so the schema.
        return _built(name, tool_kinds.generation(), model_providers.generation())
    return _shipped(name)


@functools.cache
def _shipped(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas", f"{name}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    if name == "resource":
        # Each host kind brings its own keys (engine/config/resource_kinds.py).
        return resource_schema(loaded)
    return loaded


@functools.cache
def _built(name: str, tool_generation: int, provider_generation: int) -> dict[str, Any]:
    shipped = _shipped(name)
    if name == "tool":
        return tool_kinds.tool_schema(shipped)
    if name == "model":
        block = model_block_schema({"name": True, "description": True})
        return {**shipped, "properties": {**shipped["properties"], **block["properties"]}, "allOf": block["allOf"]}
    model = {**shipped["properties"]["model"], "else": model_block_schema({})}
    return {**shipped, "properties": {**shipped["properties"], "model": model}}


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return _validator_of(kind, tool_kinds.generation(), model_providers.generation())


@functools.cache
def _validator_of(kind: str, tool_generation: int, provider_generation: int) -> jsonschema.Draft202012Validator:
    registry: referencing.Registry = referencing.Registry().with_resource(
        "https://scalytics.io/connect/config/common.json",
        referencing.Resource.from_contents(schema("common")),
    )
    return jsonschema.Draft202012Validator(
        schema(kind),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


@functools.cache
def _meta_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)


# Remembered verdicts: a configuration holds tens of files of a few KiB; a reload changes a few.
# Larger values are validated every time, so that what is kept stays within ~32 MiB.
_VERDICTS = 512
_VERDICT_BYTES = 64 * 1024
_JSON_SCALARS = (str, int, float, bool, NoneType)


def _fingerprint(value: Any) -> str | None:
    """``value`` as canonical JSON when it is plain JSON data, else None.

    Canonical JSON keeps apart all that a schema can tell apart (``true`` from ``1``,
    ``1`` from ``1.0``, ``"1"`` from ``1``), so two values with one fingerprint get one
    verdict. Keys must be strings: JSON would turn a key ``1`` into ``"1"``.
    """
    if not _plain(value, 0):
        return None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= _VERDICT_BYTES else None


def _plain(value: Any, depth: int) -> bool:
    if type(value) in _JSON_SCALARS:
        return True
    if depth > 256:  # far past what the YAML bounds let through; no recursion limit is reached
        return False
    if type(value) is dict:
        return all(type(key) is str and _plain(item, depth + 1) for key, item in value.items())
    if type(value) is list:
        return all(_plain(item, depth + 1) for item in value)
    return False


@functools.lru_cache(maxsize=_VERDICTS)
def _valid(kind: str, tool_generation: int, provider_generation: int, fingerprint: str) -> bool:
    return bool(_validator_of(kind, tool_generation, provider_generation).is_valid(json.loads(fingerprint)))


@functools.lru_cache(maxsize=_VERDICTS)
def _valid_schema(fingerprint: str) -> bool:
    return bool(_meta_validator().is_valid(json.loads(fingerprint)))


def validate(kind: str, doc: Document) -> list[ConfigProblem]:
    """Every schema violation of ``doc`` as a located problem."""
    fingerprint = _fingerprint(doc.data)
    if fingerprint is not None and _valid(kind, tool_kinds.generation(), model_providers.generation(), fingerprint):
        return []
    return [
        problem
        for error in _validator(kind).iter_errors(doc.data)
        for problem in _problems(doc, error)
    ]


def validate_parameters(doc: Document, prefix: list[PathSegment]) -> list[ConfigProblem]:
    """Check that the value at ``prefix`` is itself a valid Draft 2020-12 JSON Schema."""
    value: Any = doc.data
    for segment in prefix:
        value = value[segment]
    problems = []
    fingerprint = _fingerprint(value)
    errors = [] if fingerprint is not None and _valid_schema(fingerprint) else _meta_validator().iter_errors(value)
    for error in errors:
        path = [*prefix, *error.absolute_path]
        if path and path[-1] == "type" and error.validator in ("anyOf", "enum"):
            problems.append(
                doc.problem(
                    path,
                    f"{error.instance!r} is not a valid JSON Schema type "
                    f"(expected one of {', '.join(_JSON_TYPES)})",
                )
            )
        else:
            problems.append(doc.problem(path, f"not a valid JSON Schema: {error.message}"))
    if isinstance(value, dict) and value.get("type") != "object":
        problems.append(doc.problem(prefix, "the arguments must be an object: set 'type: object'"))
    return problems


def _problems(doc: Document, error: ValidationError) -> Iterator[ConfigProblem]:
    path: list[PathSegment] = list(error.absolute_path)
    # Our own schemas are objects, never booleans, and every error names its keyword.
    schema_here: Any = error.schema
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(schema_here.get("properties", {}))
        for key in error.instance:
            if key not in known and isinstance(schema_here.get("additionalProperties"), bool):
                hint = difflib.get_close_matches(str(key), known, n=1)
                also = f" (did you mean {hint[0]!r}?)" if hint else f" (expected one of: {', '.join(known)})"
                yield doc.problem([*path, key], f"unknown key {key!r}{also}", key=True)
        return
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield doc.problem(path, f"missing required key {missing!r}")
        return
    if error.validator == "oneOf" and schema_here is schema("tool"):
        yield doc.problem(path, tool_kinds.exactly_one_message())
        return
    if error.validator == "oneOf" and schema_here is schema("agent"):
        yield doc.problem(
            path, "declare exactly one of 'model' (a name or an inline block), 'models' (a list of names) "
            "and 'python' (module:Class, a custom agent)"
        )
        return
    if error.validator == "not" and error.validator_value == {} and path and path[-1] == "output":
        # tool.json: output is for command and python tools.
        yield doc.problem(
            path, "'output' applies to command and python tools only (a chain's result is its last step's; "
                  "an mcp_server's content blocks pass through as the server returns them)", key=True
        )
        return
    if error.validator == "not" and error.validator_value == {} and path:
        # A key a kind's files must not have (its file_rules), with the kind's own words.
        yield doc.problem(path, f"{path[-1]!r} {schema_here.get('x-refusal', 'is not allowed here')}", key=True)
        return
    if error.validator == "oneOf" and path and path[-1] == "remember":
        yield doc.problem(path, f"{error.instance!r} is not a remember bound: write 'never' or {{max: DURATION}}, "
                                "e.g. {max: 8h}")
        return
    if error.validator == "not" and error.validator_value == {"required": ["remember"]}:
        yield doc.problem([*path, "remember"], "'remember' does nothing on a deny rule (nothing is approved)", key=True)
        return
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        yield from _problems(doc, best)
        return
    if error.validator == "enum":
        validator_value: Any = error.validator_value
        choices = ", ".join(repr(choice) for choice in validator_value)
        yield doc.problem(path, f"{error.instance!r} is not one of {choices}")
        return
    if error.validator == "type" and str(schema_here.get("description", "")).startswith(("A duration", "A size")):
        example = "5s" if schema_here["description"].startswith("A duration") else "64MiB"
        yield doc.problem(path, f"{error.instance!r} needs its unit, e.g. {example}")
        return
    if error.validator == "pattern" and "x-form" in schema_here:
        # A pattern whose schema says, in words, what it stands for (a tool kind's, e.g. python's).
        yield doc.problem(path, f"{error.instance!r} is not of the form {schema_here['x-form']}")
        return
    yield doc.problem(path, error.message)
