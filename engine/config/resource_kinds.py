"""The registry of resource host kinds: each kind is one module that registers itself here.

A kind (``file``, ``db``, ``api``, ``static``, ...) brings, in its own module
under ``engine/resources/``, everything the rest of the engine needs:

- ``config_class``: the frozen attrs class a ``resources.d/`` file of this kind
  is structured into (field names are the YAML keys; it has ``scheme``,
  ``name``, ``description`` and ``source`` like every resource);
- ``schema``: the JSON Schema of such a file (validated before structuring;
  it lists every key, ``additionalProperties: false``);
- ``check``: the checks a schema cannot express, ``(resource, doc, config_root)
  -> [ConfigProblem]``;
- ``host``: the runtime, ``(resource, context) -> host`` with ``templates()``
  and ``async read(uri)`` (see :mod:`engine.resources`).

A file names its kind with ``kind:``; without one, its ``scheme`` is the kind
(``scheme: file``).  A kind registered with ``scheme`` fixed serves only that
scheme; one with ``scheme=None`` (``static``) serves whichever scheme the file
names.  This module imports nothing of the engine: the config package asks it
for the kinds, and the first question imports :mod:`engine.resources`, whose
kind modules register themselves (as entry points would, without packaging).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._registry import Registry


@attrs.frozen
class ResourceKind:
    name: str
    config_class: type
    schema: Mapping[str, Any]
    check: Callable[..., list[Any]]
    host: Callable[..., Any]
    # The one scheme this kind serves (the kind's name for file/db/api); None: any scheme.
    scheme: str | None


# its modules register themselves when the registry first imports engine.resources
_registry: Registry[ResourceKind] = Registry("resource kind", "engine.resources")


def register(kind: ResourceKind) -> ResourceKind:
    """Add ``kind``; registering another kind under a taken name is a programming error."""
    return _registry.register(kind)


def kinds() -> Mapping[str, ResourceKind]:
    """Every registered kind by name, the built-in ones included."""
    return _registry.entries()


def kind_name(data: Mapping[str, Any]) -> str | None:
    """The kind a resource file declares: its ``kind``, else its ``scheme``."""
    name = data.get("kind", data.get("scheme"))
    return name if isinstance(name, str) else None


def kind_of(resource: Any) -> ResourceKind:
    """The registered kind whose config class ``resource`` is an instance of."""
    for kind in kinds().values():
        if type(resource) is kind.config_class:
            return kind
    raise LookupError(f"no resource kind is registered for {type(resource).__name__}")


def resource_schema(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a ``resources.d/`` file: ``envelope`` with one ``allOf`` branch per kind.

    A branch applies when the file's ``kind`` is the kind's name, or (for a kind
    with a fixed scheme) when it has no ``kind`` and its ``scheme`` is that
    scheme; it lists every key the kind takes.  Two more branches refuse an
    unknown ``kind``, and a scheme without ``kind`` that no kind serves.
    """
    schema = dict(envelope)
    branches = list(schema.get("allOf", ()))
    registered = kinds()
    fixed = sorted(kind.scheme for kind in registered.values() if kind.scheme is not None)
    branches.append({"if": {"required": ["kind"]},
                     "then": {"properties": {"kind": {"enum": sorted(registered)}}}})
    branches.append({"if": {"not": {"required": ["kind"]}},
                     "then": {"properties": {"scheme": {"enum": fixed}}}})
    for name in sorted(registered):
        kind = registered[name]
        by_kind: dict[str, Any] = {"properties": {"kind": {"const": name}}, "required": ["kind"]}
        when: dict[str, Any] = by_kind
        if kind.scheme is not None:
            by_scheme = {"properties": {"scheme": {"const": kind.scheme}}, "required": ["scheme"],
                         "not": {"required": ["kind"]}}
            when = {"anyOf": [by_kind, by_scheme]}
        fragment = dict(kind.schema)
        properties = {
            "scheme": {"const": kind.scheme} if kind.scheme is not None else True,
            "kind": {"const": name},
            "name": True,
            "description": True,
            **fragment.get("properties", {}),
        }
        then = {**fragment, "additionalProperties": False, "properties": properties}
        branches.append({"if": when, "then": then})
    schema["allOf"] = branches
    return schema
