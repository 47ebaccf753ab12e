"""The protocol's JSON Schema: loading it, compiled validators, readable errors.

``schema.json`` ships in the package and is the contract for clients in any language.
Validators are compiled once at import, one per message type and direction, so decoding
a frame validates it exactly once against the small schema of its own type (a ``oneOf``
or ``if/then`` dispatch over all types would cost more and report worse errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

__all__ = ["SCHEMA_ID", "schema", "schema_text"]

_SCHEMA_TEXT: str = resources.files(__package__).joinpath("schema.json").read_text("utf-8")
_SCHEMA: dict[str, Any] = json.loads(_SCHEMA_TEXT)
SCHEMA_ID: str = _SCHEMA["$id"]

# That the shipped schema is itself valid is a test (tests/engine/test_protocol.py), not
# an import-time check: checking it against the metaschema costs ~0.15 s, which every
# process importing the protocol (each `sconnect` command, each server start) would pay.


def schema() -> dict[str, Any]:
    """The protocol's JSON Schema as a fresh dict (callers may modify their copy)."""
    fresh: dict[str, Any] = json.loads(_SCHEMA_TEXT)
    return fresh


def schema_text() -> str:
    """The protocol's JSON Schema exactly as shipped (for ``sconnect protocol schema``)."""
    return _SCHEMA_TEXT


def definitions() -> dict[str, Any]:
    """The schema's ``$defs`` (shared, do not modify)."""
    return _SCHEMA["$defs"]  # type: ignore[no-any-return]


def validator_for(def_name: str) -> Draft202012Validator:
    """A compiled validator for ``#/$defs/<def_name>``, self-contained (it carries the
    shared ``$defs`` so its ``$ref``s resolve locally)."""
    sub = dict(_SCHEMA["$defs"][def_name])
    sub["$defs"] = _SCHEMA["$defs"]
    return Draft202012Validator(sub)


def type_defs(direction: str) -> dict[str, str]:
    """Message type → ``$defs`` key for one direction (``client`` or ``server``),
    read from the dispatcher definitions so the table cannot drift from the schema."""
    out: dict[str, str] = {}
    for branch in _SCHEMA["$defs"][f"{direction}_frame"]["allOf"]:
        msg_type = branch["if"]["properties"]["type"]["const"]
        out[msg_type] = branch["then"]["$ref"].removeprefix("#/$defs/")
    return out


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_ECHO = 64  # client-supplied keys are echoed back only this far


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 1] + "…"


def json_path(parts: Iterable[str | int]) -> str:
    """``$.payload.tools[0].name`` style path; odd keys as ``["a.b"]``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append("." + _clip(part))
        else:
            out.append("[" + json.dumps(_clip(part), ensure_ascii=False) + "]")
    return "".join(out)


_TYPE_WORDS = {
    "string": "a string",
    "object": "an object",
    "array": "an array",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true/false)",
    "null": "null",
}


def _describe(err: ValidationError) -> tuple[str, str]:
    """(JSON path of the offending field, message that never echoes client values).

    jsonschema's own messages repr the instance, which may be megabytes of client text;
    and it reports ``required``/``additionalProperties`` at the parent object, while a
    client needs the name of the missing or unexpected field itself.
    """
    parts: list[str | int] = list(err.absolute_path)
    # jsonschema types these as "maybe unset"; a ValidationError from iter_errors has them all.
    kind, value, inst = err.validator, cast(Any, err.validator_value), err.instance
    schema = cast(Mapping[str, Any], err.schema)
    if kind == "required" and isinstance(inst, Mapping):
        missing = [k for k in value if k not in inst]
        parts.append(missing[0] if missing else "?")
        return json_path(parts), "missing field"
    if kind == "additionalProperties" and isinstance(inst, Mapping):
        known = schema.get("properties", {})
        extra = sorted(k for k in inst if k not in known)
        parts.append(extra[0] if extra else "?")
        return json_path(parts), "unexpected field"
    path = json_path(parts)
    if kind == "type":
        types = [value] if isinstance(value, str) else list(value)
        return path, "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    if kind == "enum":
        return path, "must be one of " + ", ".join(json.dumps(v) for v in value)
    if kind == "const":
        return path, f"must be {json.dumps(value)}"
    if kind == "minLength":
        return path, "must not be empty" if value == 1 else f"must be at least {value} characters"
    if kind == "maxLength":
        return path, f"must be at most {value} characters"
    if kind == "pattern":
        return path, f"must match {value}"
    if kind in ("minimum", "maximum"):
        return path, f"must be {'>=' if kind == 'minimum' else '<='} {value}"
    if kind == "maxItems":
        return path, f"must have at most {value} items"
    if kind == "oneOf" and path.endswith("payload"):
        return path, "needs exactly one of the alternatives " + ", ".join(
            "/".join(alt.get("required", [])) for alt in value
        )
    return path, _clip(err.message)


_MAX_ERRORS = 10


def explain(errors: list[ValidationError]) -> tuple[str, dict[str, Any]]:
    """Summary message and ``details`` (``path`` of the most relevant error, ``errors``:
    up to ten ``{path, message}``) for a non-empty list of validation errors."""
    best = best_match(errors)
    path, message = _describe(best)
    listed = [best] + [e for e in errors if e is not best]
    details = {
        "path": path,
        "errors": [dict(zip(("path", "message"), _describe(e), strict=True))
                   for e in listed[:_MAX_ERRORS]],
    }
    return f"{path}: {message}", details
