"""``routing: feedback``: Thompson sampling over ratings, the exploration share, the fallback
order, and repeatable choices under a seeded generator (no server: the strategy alone, and
the decayed scores the turn loop builds from the store)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from engine.config.model import Agent
from engine.config.model import FeedbackRouting as FeedbackSettings
from engine.config.units import Seconds
from engine.memory.prelude import routing_context
from engine.models.base import ModelError
from engine.models.routed import ROUTINGS, FeedbackRouting, RoutingContext, Score
from engine.store import Store

NAMES = ["a", "b"]


def choices(scores: dict[str, Score], *, seed: int, exploration: float, turns: int = 2000) -> Counter[str]:
    rng = random.Random(seed)
    counted: Counter[str] = Counter()
    for _ in range(turns):
        routing = ROUTINGS["feedback"](RoutingContext(scores, rng, exploration))
        counted[routing.order(NAMES)[0]] += 1
    return counted


def test_the_well_rated_model_gets_most_turns_and_the_other_its_exploration_share() -> None:
    scores = {"a": Score(good=0, bad=20), "b": Score(good=20, bad=0)}
    counted = choices(scores, seed=1, exploration=0.2)
    # b wins every draw but loses half of the explored turns (20% of them, at random).
    assert 0.85 < counted["b"] / 2000 < 0.95 and counted["a"] > 150
    assert choices(scores, seed=1, exploration=0.2) == counted
    assert choices(scores, seed=2, exploration=0.0)["a"] == 0


def test_without_ratings_the_choice_is_even() -> None:
    counted = choices({}, seed=3, exploration=0.0)
    assert 0.45 < counted["a"] / 2000 < 0.55


def test_one_draw_per_turn_then_fallbacks_in_declared_order() -> None:
    routing = FeedbackRouting(RoutingContext({"a": Score(0, 50), "b": Score(50, 0)}, random.Random(5), 0.0))
    names = ["a", "b", "c"]
    assert routing.order(names) == ["b", "a", "c"] and routing.how == "sampled"
    assert routing.order(names) == ["b", "a", "c"]  # the same turn: not drawn again
    routing.failed("b", ModelError("down"))
    routing.served("a")
    assert routing.order(names) == ["a", "b", "c"]  # the one that served goes first, as with `first`


async def test_scores_fade_with_the_half_life_and_the_seed_follows_the_turns(tmp_path: Path) -> None:
    agent = Agent(name="llm", description="x", models=("a", "b"), routing="feedback",
                  feedback_routing=FeedbackSettings(half_life=Seconds(100), seed=9))
    now = 1_700_000_000.0
    async with await Store.open(tmp_path / "state.db") as store:
        await store.create_session("s", "alice", "llm", now=now)
        for i, (model, rating, age) in enumerate([("a", -1, 0), ("a", 1, 100), ("b", 1, 200), ("z", 1, 0)]):
            turn = await store.record_turn(turn_id=f"t{i}", session_id="s", subject="alice", agent="llm", model=model,
                                           tools=(), question="q", answer="x", now=now - age)
            await store.rate_turn(turn, rating, now=now - age)
        context = await routing_context(store, agent, now=now)
        assert context is not None
        assert context.scores == {"a": Score(good=0.5, bad=1.0), "b": Score(good=0.25, bad=0.0)}
        # Seeded by the seed, the agent and its turns so far: the same until a turn is added.
        assert context.rng.random() == random.Random("9:llm:4").random()
        await store.record_turn(turn_id="t9", session_id="s", subject="alice", agent="llm", model="a", tools=(),
                                question="q", answer="x", now=now)
        moved = await routing_context(store, agent, now=now)
        assert moved is not None and moved.rng.random() == random.Random("9:llm:5").random()
        assert await routing_context(store, Agent(name="x", description="x", models=("a",)), now=now) is None
