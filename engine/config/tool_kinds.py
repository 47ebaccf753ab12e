"""The registry of tool kinds: each kind is one module that registers itself here.

A kind is named by the top-level key that declares it in a ``tools.d/`` file
(``command``, ``python``, ``chain``, ``mcp_server``, ``builtin``: exactly one per file), and
brings, in its own module under ``engine/toolkinds/``, everything the rest of the
engine needs:

- ``schema``: the JSON Schema of that key's value; ``file_rules``, the schema a
  file of this kind must also meet (by default: ``parameters`` and
  ``permission_level`` are required); ``exclusive``, other top-level keys such a
  file may not have (a chain has no ``sandbox``);
- ``check``: the checks a schema cannot express, ``(tool, doc, config_root) ->
  (tool, [ConfigProblem])`` (it may complete the tool, as ``python`` does with the
  package it located), and ``check_references``, those that need every other tool
  (``(tool, doc, tools, failed) -> [ConfigProblem]``, run once every file loaded);
- ``fill``: what the kind fixes in its files itself, ``(data) -> data``, applied
  before the file is structured (``builtin`` fills in the engine's parameters);
- how it runs, exactly one of: ``launch``, a program in a sandbox, ``(tool,
  arguments, *, workspace, work_root) -> sandbox.Result`` (it takes one of the
  limited run slots; :func:`engine.toolrun.run_tool` calls it), ``compose``,
  made of other tools' actions, ``(tool, arguments, perform) -> outcome``
  (``perform(name, arguments)`` is one full action of the same caller; the outcome
  has ``status``, ``output`` and ``reason``), or ``serve``, carried out in the
  engine itself for the caller, ``(caller, tool, arguments) -> outcome`` (no
  sandbox, no slot: ``builtin``'s short store writes);
- ``describe``: how the tool runs, in one line (``sconnect tools``).

The built-in kinds keep their settings in fields of :class:`~.model.Tool`
(``command``, ``python``, ``chain``, ``upstream``, ``builtin``); a kind registered from
elsewhere names an ``options_class``, into which the value of its key is
structured (``Tool.options``).  A kind whose file is not one tool
(``mcp_server``) names its ``file_class`` and an ``expose`` function giving the
tools the file declares.

This module imports nothing of the engine: the config package asks it for the
kinds, and the first question imports :mod:`engine.toolkinds`, whose modules
register themselves (as :mod:`.resource_kinds` does for resource hosts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._registry import Registry

#: A program tool's own contract: what a file of most kinds must declare.
PROGRAM_RULES: Mapping[str, Any] = MappingProxyType({"required": ["parameters", "permission_level"]})


def _no_check(tool: Any, doc: Any, root: Any) -> tuple[Any, list[Any]]:
    return tool, []


@attrs.frozen
class ToolKind:
    name: str
    schema: Mapping[str, Any]
    # How the "declare exactly one of ..." message names this kind, e.g. "'command' (an argv list)".
    hint: str
    describe: Callable[[Any], str]
    check: Callable[[Any, Any, Any], tuple[Any, list[Any]]] = _no_check
    check_references: Callable[..., list[Any]] | None = None
    launch: Callable[..., Awaitable[Any]] | None = None
    compose: Callable[..., Awaitable[Any]] | None = None
    serve: Callable[..., Awaitable[Any]] | None = None
    fill: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    file_rules: Mapping[str, Any] = PROGRAM_RULES
    exclusive: tuple[str, ...] = ()
    options_class: type | None = None
    file_class: type | None = None
    expose: Callable[[Any, Any], tuple[Any, ...]] | None = None
    # Its launch runs the tool through engine.toolrun.run_program, so the sandbox may start
    # while the call's decision is being committed (the tool gets no input before it is).
    # Off by default: another launch gets the go-ahead before it is called at all.
    early_start: bool = False

    def __attrs_post_init__(self) -> None:
        if [self.launch, self.compose, self.serve].count(None) != 2:
            raise ValueError(f"tool kind {self.name!r} needs exactly one of launch, compose and serve")
        if (self.file_class is None) != (self.expose is None):
            raise ValueError(f"tool kind {self.name!r}: a file_class needs expose, and the reverse")


# its modules register themselves when the registry first imports engine.toolkinds
_registry: Registry[ToolKind] = Registry("tool kind", "engine.toolkinds")


def register(kind: ToolKind) -> ToolKind:
    """Add ``kind`` (see `Registry.register`): register before loading a configuration that uses it."""
    return _registry.register(kind)


def unregister(name: str) -> None:
    """Remove a kind registered from outside the engine (a test's); unknown names are ignored."""
    _registry.unregister(name)


def generation() -> int:
    """Changes whenever a kind comes or goes: what is built from the kinds (the tools.d/
    schema and its validator) is cached under it."""
    return _registry.generation()


def kinds() -> Mapping[str, ToolKind]:
    """Every registered kind by name, the built-in ones included (in registration order)."""
    return _registry.entries()


def declared(data: Mapping[str, Any]) -> ToolKind | None:
    """The kind a tools.d/ file declares: the first registered kind whose key it has."""
    for name, kind in kinds().items():
        if name in data:
            return kind
    return None


def kind_of(obj: Any) -> ToolKind:
    """The registered kind of a :class:`~.model.Tool` (its ``kind``) or of a kind's file object."""
    registered = kinds()
    name = getattr(obj, "kind", None)
    if isinstance(name, str) and name in registered:
        return registered[name]
    for kind in registered.values():
        if kind.file_class is not None and type(obj) is kind.file_class:
            return kind
    raise LookupError(f"no tool kind is registered for {obj!r:.80}")


def tool_schema(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a ``tools.d/`` file: ``envelope`` (the keys every kind shares) with each
    kind's key, exactly one of them required, and each kind's rules for its own files."""
    schema = dict(envelope)
    registered = kinds()
    schema["properties"] = {**schema.get("properties", {}), **{name: k.schema for name, k in registered.items()}}
    def others(name: str, *extra: str) -> dict[str, Any]:
        return {"anyOf": [{"required": [other]} for other in (*registered, *extra) if other != name]}

    only = {name: {"required": [name], "not": others(name)} for name in registered}
    schema["oneOf"] = [{"required": [name], "not": others(name, *kind.exclusive)} for name, kind in registered.items()]
    # A file declaring several kinds gets the one "exactly one" message, not every kind's rules.
    schema["allOf"] = [
        *schema.get("allOf", ()),
        *({"if": only[name], "then": dict(kind.file_rules)} for name, kind in registered.items()),
    ]
    return schema


def exactly_one_message() -> str:
    """What a file declaring none, or several, of the kinds' keys is told."""
    hints = [kind.hint for kind in kinds().values()]
    listed = ", ".join(hints[:-1]) + f" and {hints[-1]}" if len(hints) > 1 else "".join(hints)
    return f"declare exactly one of {listed}"
