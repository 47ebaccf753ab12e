"""The example custom agent: plans a day in a city with the weather agent and the calculator.

Agent code is operator code: it runs inside the engine. It acts only through the
context it is given (``context.delegate``, ``context.call_tool``), so each step
is decided by the policy, approved where needed, sandboxed and audited.
"""

from __future__ import annotations

import re

from engine.agents import AgentContext, BaseAgent

_ASK = re.compile(r"(?i)\bplan (?:a|my) day in (?P<city>[a-z][a-z -]{0,40}[a-z])")
# A sample day: (what, cost in EUR).
_DAY = (("a museum in the morning", "17"), ("lunch", "25"), ("two metro rides", "2*2.15"))


class Planner(BaseAgent):
    async def process_message(self, message: str, context: AgentContext) -> str | None:
        found = _ASK.search(message)
        if found is None:
            return 'Ask me to "plan a day in Paris" (or another city).'
        city = found.group("city").strip()
        weather = await context.delegate("weather", f"weather in {city.lower()}")
        if weather.ok:
            await context.say(f"Weather: {weather.output['answer'].strip()}\n")
        else:
            await context.say(f"(I could not get the weather: {weather.reason})\n")
        await context.say(f"Plan for {city.title()}: " + ", then ".join(what for what, _ in _DAY) + ".\n")
        total = await context.call_tool("calculator", {"expression": " + ".join(cost for _, cost in _DAY)})
        if not total.ok:
            return f"(I could not add up the costs: {total.reason})"
        return f"Estimated cost: {total.output['result']} EUR."
