"""From configuration to a running model: a provider block, or an agent's whole model choice.

Providers import :mod:`engine.models.base` for the interface and register themselves
(engine/config/model_providers.py); this module asks the registry, and imports none of
them, so there is no cycle between the interface and its implementations.

:func:`agent_model` is what a turn uses: it resolves the agent's ``model:`` (an
inline block or a models.d/ name) or ``models:`` list against the configuration
snapshot of the turn, and wraps the result in a :class:`~.routed.Routed` model
so that every step is observed (which model served it) and a list is routed.
"""

from __future__ import annotations

from ..config.model import Agent, Config, ModelConfig
from ..config.model_providers import provider_of
from .base import Model, ModelError
from .routed import ROUTINGS, NoObserver, Observer, Routed, RoutingContext


class UnknownModel(ModelError):
    """An agent names a model the configuration does not declare (``check`` refuses this first)."""


def make_model(config: ModelConfig) -> Model:
    """The model of a ``model:`` block or a models.d/ file, made by its registered provider."""
    model: Model = provider_of(config).model(config)
    return model


def inline_label(agent: Agent) -> str:
    """The metrics label of an agent's inline ``model:`` block (bounded: one per agent)."""
    return f"{agent.name}/inline"


def agent_model(
    agent: Agent, config: Config, observer: Observer | None = None, routing: RoutingContext | None = None
) -> Routed:
    """The model one turn of ``agent`` uses, resolved against ``config`` (the turn's snapshot);
    ``routing`` holds what ``routing: feedback`` chooses by (engine/memory/prelude.py)."""
    observer = observer or NoObserver()
    context = routing or RoutingContext()
    if agent.model is not None and not isinstance(agent.model, str):
        return Routed({inline_label(agent): make_model(agent.model)}, ROUTINGS["first"](context), observer)
    candidates: dict[str, Model] = {}
    for name in agent.model_names:
        named = config.models.get(name)
        if named is None:
            raise UnknownModel(f"the agent {agent.name!r} names the model {name!r}, which is not declared")
        candidates[name] = make_model(named.model)
    if not candidates:
        raise UnknownModel(f"the agent {agent.name!r} has no model")
    return Routed(candidates, ROUTINGS[agent.routing](context), observer)
