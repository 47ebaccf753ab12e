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

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

_lock = threading.Lock()
_providers: dict[str, ModelProvider] = {}
_discovered = False
_discovering = False
_discovery = threading.RLock()
_generation = 0


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


def register(provider: ModelProvider) -> ModelProvider:
    """Add ``provider``; another provider under a taken name is a programming error."""
    providers()  # the built-in providers first, whoever registers first
    global _generation
    with _lock:
        known = _providers.get(provider.name)
        if known is not None and known != provider:
            raise ValueError(f"model provider {provider.name!r} is already registered")
        if known is None:
            _providers[provider.name] = provider
            _generation += 1
    return provider


def unregister(name: str) -> None:
    """Remove a provider registered from outside the engine (a test's); unknown names are ignored."""
    global _generation
    with _lock:
        if _providers.pop(name, None) is not None:
            _generation += 1


def generation() -> int:
    """Changes whenever a provider comes or goes (the schemas built from them are cached under it)."""
    return _generation


def providers() -> Mapping[str, ModelProvider]:
    """Every registered provider by name, the built-in ones included (in registration order)."""
    global _discovered, _discovering
    if not _discovered:
        # Another thread waits here until the import is done; the importing thread's own
        # register() calls come back here and return at once.
        with _discovery:
            if not _discovered and not _discovering:
                _discovering = True
                try:
                    importlib.import_module("engine.models")  # its provider modules call register()
                finally:
                    _discovering = False
                _discovered = True
    return dict(_providers)


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
