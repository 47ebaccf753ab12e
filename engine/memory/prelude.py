"""A turn's learning: what the model is given first, how the turn is routed, what is kept after.

Called by the turn loop (``engine/server/session.py``):

- :func:`routing_context` before the model is built: for ``routing: feedback``, each
  model's ratings of this agent, weighted ``0.5 ** (age / half_life)`` so old ones
  fade, and the random generator (seeded from ``feedback_routing.seed``, the agent
  and the number of its turns so far, so a fixed seed repeats the same choices);
- :func:`prelude` before the first step: system messages after the agent's own
  prompt, holding the subject's memories with this agent (memory on) and
  well-rated earlier turns as examples (``examples_from_feedback``).  Memories are
  given as a read of ``memory://HOST`` (the agent's memory host) under policy: the
  read is decided and audited like any read, without an ``agent_action`` (nobody is
  asked: a read that needs an approval gives nothing, and so does a denied one).
  When the subject has no memories nothing is given, so nothing is decided or audited.  Examples
  come from the same subject's turns unless ``examples_scope: agent``;
- :func:`record_turn` before the answer is sent: the turn's record (question,
  answer, the model that answered, the tools it called), which ``feedback``
  frames rate, and the routing choice counted in metrics.

Errors: the store's, except in :func:`record_turn`, which logs and carries on (the
user still gets the answer; only its rating will find no turn).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ..audit import AuditEvent
from ..config.model import Agent
from ..decision import decide
from ..models.routed import FeedbackRouting, Routed, RoutingContext, Score
from .resource import cutoff

if TYPE_CHECKING:
    from ..server.actions import Caller
    from ..store import Store

log = logging.getLogger(__name__)

#: The longest question or answer of one example given to the model.
EXAMPLE_CHARS: Final = 1000


async def routing_context(store: Store, agent: Agent, now: float | None = None) -> RoutingContext | None:
    """What ``routing: feedback`` chooses by for the next turn of ``agent`` (None for other routings)."""
    if agent.routing != "feedback":
        return None
    at = time.time() if now is None else now
    settings = agent.feedback_routing
    half_life = float(settings.half_life)
    totals = {name: [0.0, 0.0] for name in agent.model_names}
    for rating in await store.ratings(agent.name):
        if rating.model not in totals:
            continue
        weight = 0.5 ** (max(0.0, at - rating.created_at) / half_life)
        totals[rating.model][0 if rating.rating > 0 else 1] += weight
    scores = {name: Score(good, bad) for name, (good, bad) in totals.items()}
    if settings.seed is None:
        rng = random.Random()
    else:
        rng = random.Random(f"{settings.seed}:{agent.name}:{await store.turn_count(agent.name)}")
    return RoutingContext(scores, rng, settings.exploration)


async def prelude(caller: Caller, agent: Agent) -> list[dict[str, Any]]:
    """The system messages that go between the agent's prompt and the conversation."""
    messages = []
    memories = await _recall(caller, agent)
    if memories:
        listed = "\n".join(f"- [{memory_id}] {content}" for memory_id, content in memories)
        messages.append({"role": "system", "content": (
            "What you remember about this user from earlier conversations (they can list and delete "
            f"these with /memory; ids in brackets):\n{listed}")})
    if agent.examples_from_feedback:
        store = caller.conn.hub.store
        subject = None if agent.examples_scope == "agent" else caller.sub
        turns = await store.rated_examples(agent.name, subject=subject, limit=agent.examples_from_feedback)
        if turns:
            shown = "\n\n".join(
                f"User: {_clip(turn.question)}\nYou: {_clip(turn.answer)}" for turn in turns
            )
            messages.append({"role": "system", "content": (
                f"Earlier answers that users rated as good, as examples of what is wanted:\n\n{shown}")})
    return messages


async def _recall(caller: Caller, agent: Agent) -> list[tuple[str, str]]:
    if not agent.memory.enabled or agent.memory.recall == 0:
        return []
    host = next((name for name in agent.resources if name.startswith("memory://")), None)
    if host is None:  # `check` refuses memory on without a host; a config built in code may lack one
        return []
    hub = caller.conn.hub
    snap = caller.snap
    records = await hub.store.memories(caller.sub, agent.name, since=cutoff(snap.config, agent.name, time.time()),
                                       limit=agent.memory.recall)
    if not records:
        return []  # nothing would be given to the model: no read to decide on (and no audit write per turn)
    decision = decide(snap.config, caller.sub, caller.conn.principal.roles, "resource.read", host)
    allowed = decision.effect == "allow" and not decision.requires_approval
    if not allowed:
        records = ()
    await hub.audit.record(AuditEvent(
        kind="resource_read", subject=caller.sub, session_id=caller.session_id, agent=agent.name,
        action="resource.read", target=host, effect=decision.effect, rule_ids=decision.rule_ids, decided_by="rule",
        outcome="ok" if allowed else "skipped", policy_revision=snap.policy_revision,
        details={**caller.conn.audit_context, "recall": len(records), "reason": decision.reason},
    ))
    return [(record.memory_id, record.content) for record in records]


def _clip(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


async def record_turn(caller: Caller, agent: Agent, *, turn_id: str, question: str, answer: str,
                      model: Routed | None, tools: Iterable[str]) -> None:
    """Keep the answered turn, so that it can be rated; count the routing's choice."""
    hub = caller.conn.hub
    routing = model.routing if model is not None else None
    if isinstance(routing, FeedbackRouting) and routing.chosen is not None:
        hub.metrics.model_choices_total.inc(agent=agent.name, model=routing.chosen, how=routing.how)
    assert caller.session_id is not None
    try:
        await hub.store.record_turn(
            turn_id=turn_id, session_id=caller.session_id, subject=caller.sub, agent=agent.name,
            model=model.served if model else None, tools=tuple(tools), question=question, answer=answer,
        )
    except Exception:
        log.exception("the turn's record was not kept", extra={"session_id": caller.session_id})
