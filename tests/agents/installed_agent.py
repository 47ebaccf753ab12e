"""An agent importable as an installed module (``python: tests.agents.installed_agent:Agent``), for the loader tests."""

from __future__ import annotations

from engine.agents import AgentContext, BaseAgent


class Agent(BaseAgent):
    async def process_message(self, message: str, context: AgentContext) -> str | None:
        return f"installed: {message}"
