"""Several models behind one: ``routing: first`` (the first that answers) or ``feedback``.

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

Strategies, registered in :data:`ROUTINGS` (each made per turn from a
:class:`RoutingContext`): ``first`` (declared order) is :class:`FirstRouting`;
``feedback`` is :class:`FeedbackRouting`: at the turn's first step it draws, for
each model, a success rate from Beta(1 + good, 1 + bad) over that model's
(decayed) ratings and puts the highest first (Thompson sampling); with
probability ``exploration`` it takes a model uniformly at random instead, so a
model that was rated down early still gets a share of turns to redeem itself.
The others stay behind it as fallbacks, as with ``first``.  All draws come from
the context's ``rng``: a seeded one makes the choices repeatable.

Observing: every step ends with one call to the :class:`Observer` (``served``
or ``failed`` with the candidate's name), which the server turns into the
``sconnect_model_steps_total{model, outcome}`` counter.

Cancellation: the candidate's stream lives in an ``aclosing`` block, so a
cancelled or closed step closes the candidate's request too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
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


@attrs.frozen
class Score:
    """A model's ratings, each weighted by how recent it is (see engine/memory/prelude.py)."""

    good: float = 0.0
    bad: float = 0.0


@attrs.frozen
class RoutingContext:
    """What a strategy may use for one turn: the models' scores and where its randomness comes from."""

    scores: Mapping[str, Score] = attrs.field(factory=dict)
    rng: random.Random = attrs.field(factory=random.Random)
    exploration: float = 0.1


@attrs.define(eq=False)
class FeedbackRouting:
    """Thompson sampling over ratings, drawn once per turn; then like :class:`FirstRouting`."""

    context: RoutingContext
    #: The model drawn for this turn, and how: ``sampled`` (best draw) or ``explored`` (at random).
    chosen: str | None = None
    how: str = ""
    _first: FirstRouting = attrs.field(factory=FirstRouting)

    def order(self, names: Sequence[str]) -> list[str]:
        if self.chosen is None and names:
            rng = self.context.rng
            if rng.random() < self.context.exploration:
                self.chosen, self.how = rng.choice(list(names)), "explored"
            else:
                draws = {}
                for name in names:
                    score = self.context.scores.get(name, Score())
                    draws[name] = rng.betavariate(1.0 + score.good, 1.0 + score.bad)
                self.chosen, self.how = max(names, key=lambda n: draws[n]), "sampled"
        chosen = self.chosen
        ordered = [chosen, *(n for n in names if n != chosen)] if chosen is not None and chosen in names else names
        return self._first.order(ordered)

    def served(self, name: str) -> None:
        self._first.served(name)

    def failed(self, name: str, error: ModelError) -> None:
        self._first.failed(name, error)


ROUTINGS: dict[str, Callable[[RoutingContext], Routing]] = {
    "first": lambda _context: FirstRouting(),
    "feedback": FeedbackRouting,
}


class AllModelsFailed(ModelError):
    """Every candidate failed before answering; the message names each with its error."""


@attrs.define(eq=False)
class Routed:
    """A :class:`~engine.models.base.Model` over named candidates."""

    candidates: dict[str, Model]
    routing: Routing = attrs.field(factory=FirstRouting)
    observer: Observer = attrs.field(factory=NoObserver)
    #: The candidate that served the last step (None until one has): the turn's model, for its record.
    served: str | None = None

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
            self.served = name
            self.observer.model_step(name, "served")
            return
