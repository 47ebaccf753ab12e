"""The registry of model providers: each provider is one module that registers itself here.

A provider is named by the ``provider:`` of a model block (an agent's inline
``model:``, or a ``models.d/`` file) and brings, in its own module under
``engine/models/``, everything the rest of the engine needs:

- ``config_class``: the frozen attrs class the block is structured into (field
  names are the YAML keys; it has ``provider``);
- ``schema``: the JSON Schema of the block's other keys, as ``properties`` (and
  ``required``); the block takes no key it does not list;
- ``check``: the checks a schema cannot express, ``(config, doc, prefix, agent)
  -> [ConfigProblem]`` (``prefix``: where the block is in the file; ``agent``:
  the agent of an inline block, None for a models.d/ file), and ``check_use``,
  those of an agent naming a models.d/ model of this provider, ``(named, agent,
  doc, where) -> [ConfigProblem]``;
- ``model``: the runtime, ``config -> Model`` (see :mod:`engine.models.base`),
  called for each turn; a provider's heavy imports belong inside it.

This module imports nothing of the engine: the config package asks it for the
providers, and the first question imports :mod:`engine.models`, whose provider
modules register themselves (as :mod:`.resource_kinds` does for resource hosts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._registry import Registry


@attrs.frozen
class ModelProvider:
    name: str
    config_class: type
    schema: Mapping[str, Any]
    model: Callable[[Any], Any]
    # How the provider's enum describes it, e.g. "rules (built in, offline)".
    summary: str
    check: Callable[..., list[Any]] | None = None
    check_use: Callable[..., list[Any]] | None = None


# its modules register themselves when the registry first imports engine.models
_registry: Registry[ModelProvider] = Registry("model provider", "engine.models")


def register(provider: ModelProvider) -> ModelProvider:
    """Add ``provider``; another provider under a taken name is a programming error."""
    return _registry.register(provider)


def unregister(name: str) -> None:
    """Remove a provider registered from outside the engine (a test's); unknown names are ignored."""
    _registry.unregister(name)


def generation() -> int:
    """Changes whenever a provider comes or goes (the schemas built from them are cached under it)."""
    return _registry.generation()


def providers() -> Mapping[str, ModelProvider]:
    """Every registered provider by name, the built-in ones included (in registration order)."""
    return _registry.entries()


def provider_of(config: Any) -> ModelProvider:
    """The registered provider of a structured model block."""
    provider = providers().get(getattr(config, "provider", None) or "")
    if provider is None or type(config) is not provider.config_class:
        raise LookupError(f"no model provider is registered for {config!r:.80}")
    return provider


def model_block_schema(shared: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of a model block: ``provider`` (one of the registered names) and, for each
    provider, its own keys and nothing else; ``shared`` are keys the block may also hold
    (``name`` and ``description`` in a models.d/ file)."""
    registered = providers()
    summaries = [provider.summary for provider in registered.values()]
    listed = ", ".join(summaries[:-1]) + f" or {summaries[-1]}" if len(summaries) > 1 else "".join(summaries)
    branches = []
    for name, provider in registered.items():
        then: dict[str, Any] = {
            "additionalProperties": False,
            **{key: value for key, value in provider.schema.items() if key != "properties"},
            "properties": {**shared, "provider": True, **provider.schema.get("properties", {})},
        }
        branches.append({"if": {"properties": {"provider": {"const": name}}, "required": ["provider"]},
                         "then": then})
    return {
        "required": ["provider"],
        "properties": {"provider": {"enum": list(registered), "description": f"{listed}."}},
        "allOf": branches,
    }
