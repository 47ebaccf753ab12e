"""``sconnect feedback report``'s numbers: ratings per agent, per model and per tool.

Pure aggregation over the store's ratings (every one kept, however old: the report
shows what users said, undecayed; the routing's own view fades them) and the number
of kept turns each model answered.  A rating counts once for its agent, once for its
model and once for each distinct tool its turn called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..store import Rating


@attrs.frozen
class Line:
    """One row: ``rated`` turns, ``good`` and ``bad`` among them, and (models) turns answered."""

    by: str  # agent | model | tool
    agent: str
    name: str
    rated: int
    good: int
    bad: int
    turns: int | None = None

    @property
    def good_rate(self) -> float | None:
        return self.good / self.rated if self.rated else None

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "good_rate": self.good_rate}


def report(ratings: Iterable[Rating], turns: Mapping[tuple[str, str | None], int],
           agent: str | None = None) -> list[Line]:
    """Rows by agent, then by model, then by tool, each sorted by agent and name."""
    counts: dict[tuple[str, str, str], list[int]] = {}

    def add(by: str, agent_name: str, name: str, rating: int) -> None:
        row = counts.setdefault((by, agent_name, name), [0, 0])
        row[0 if rating > 0 else 1] += 1

    for rating in ratings:
        if agent is not None and rating.agent != agent:
            continue
        add("agent", rating.agent, rating.agent, rating.rating)
        add("model", rating.agent, rating.model or "-", rating.rating)
        for tool in dict.fromkeys(rating.tools):
            add("tool", rating.agent, tool, rating.rating)
    for (agent_name, model), _count in turns.items():
        if agent is None or agent_name == agent:
            counts.setdefault(("model", agent_name, model or "-"), [0, 0])
    order = {"agent": 0, "model": 1, "tool": 2}
    lines = []
    for (by, agent_name, name), (good, bad) in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        answered = turns.get((agent_name, None if name == "-" else name), 0) if by == "model" else None
        lines.append(Line(by, agent_name, name, good + bad, good, bad, answered))
    return lines
