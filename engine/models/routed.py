"""Several models behind one: each step goes to the first that answers (``routing: first``).

A :class:`Routed` model holds named candidates and a :class:`Routing` strategy
that orders them for each step.  A candidate that fails with a
:class:`~engine.models.base.ModelError` *before it has passed anything on*
(it could not connect, timed out, answered 5xx after its own retries, or sent
a malformed answer) is reported to the strategy and the next one is tried.  A
failure after some of the answer was streamed to the user is not retried
elsewhere (the user has already seen part of one answer): it ends the step.
A policy denial is not a model error at all: it is a tool result the model
reads back, and never moves the turn to another model.

Within one :class:`Routed` (the session builds one per turn) the model that
served a step is tried first for the next step, so a turn whose first choice
is down does not pay its connect timeout and retries at every step.

Strategies: ``first`` (declared order) is :class:`FirstRouting`.  Another
strategy (``feedback``: Thompson sampling over ratings) implements
:class:`Routing` and is registered in :data:`ROUTINGS`; nothing else changes.

Observing: every step ends with one call to the :class:`Observer` (``served``
or ``failed`` with the candidate's name), which the server turns into the
``sconnect_model_steps_total{model, outcome}`` counter.

Cancellation: the candidate's stream lives in an ``aclosing`` block, so a
cancelled or closed step closes the candidate's request too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Protocol

import attrs

from .base import Message, Model, ModelError, TextDelta, ToolCall, ToolDefinition

log = logging.getLogger(__name__)


class Observer(Protocol):
    def model_step(self, model: str, outcome: str) -> None:
        """One step ended: ``outcome`` is ``served``, ``failed`` or ``fell_back``."""
        ...


class NoObserver:
    def model_step(self, model: str, outcome: str) -> None:
        return None


class Routing(Protocol):
    """Orders the candidates for one step and learns how each fared."""

    def order(self, names: Sequence[str]) -> list[str]: ...

    def served(self, name: str) -> None: ...

    def failed(self, name: str, error: ModelError) -> None: ...


@attrs.define(eq=False)
class FirstRouting:
    """Declared order; the one that last served goes first (it is known to be up)."""

    _preferred: str | None = None

    def order(self, names: Sequence[str]) -> list[str]:
        ordered = list(names)
        if self._preferred in ordered:
            ordered.remove(self._preferred)
            ordered.insert(0, self._preferred)
        return ordered

    def served(self, name: str) -> None:
        self._preferred = name

    def failed(self, name: str, error: ModelError) -> None:
        if self._preferred == name:
            self._preferred = None


ROUTINGS: dict[str, Callable[[], Routing]] = {"first": FirstRouting}


class AllModelsFailed(ModelError):
    """Every candidate failed before answering; the message names each with its error."""


@attrs.define(eq=False)
class Routed:
    """A :class:`~engine.models.base.Model` over named candidates."""

    candidates: dict[str, Model]
    routing: Routing = attrs.field(factory=FirstRouting)
    observer: Observer = attrs.field(factory=NoObserver)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncGenerator[TextDelta | ToolCall, None]:
        errors: list[str] = []
        order = self.routing.order(list(self.candidates))
        for position, name in enumerate(order):
            passed_on = False
            try:
                async with aclosing(self.candidates[name].stream(messages, tools)) as stream:  # type: ignore[type-var]
                    async for item in stream:
                        passed_on = True
                        yield item
            except ModelError as exc:
                self.routing.failed(name, exc)
                last = position == len(order) - 1
                if passed_on or last:
                    self.observer.model_step(name, "failed")
                    if errors and not passed_on:
                        errors.append(f"{name}: {exc}")
                        raise AllModelsFailed("every model failed: " + "; ".join(errors)) from exc
                    raise
                self.observer.model_step(name, "fell_back")
                log.warning("model %s failed, trying %s: %s", name, order[position + 1], exc)
                errors.append(f"{name}: {exc}")
                continue
            self.routing.served(name)
            self.observer.model_step(name, "served")
            return
