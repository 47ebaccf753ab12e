"""From an agent's ``model:`` block to a running provider.

Providers import :mod:`engine.models.base` for the interface; only this module imports
providers, each lazily (the OpenAI-compatible one pulls in httpx), so there is no cycle
between the interface and its implementations.
"""

from __future__ import annotations

from ..config.model import ModelConfig, OpenAIModel, RulesModel
from .base import Model


def make_model(config: ModelConfig) -> Model:
    """The provider named by an agent's ``model:`` block."""
    if isinstance(config, RulesModel):
        from .rules import RulesProvider

        return RulesProvider(config)
    if isinstance(config, OpenAIModel):
        from .openai import OpenAIProvider

        return OpenAIProvider(config)
    raise TypeError(f"unknown model configuration {config!r}")
