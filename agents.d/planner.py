"""The example custom agent: plans a day in a city with the weather agent and the calculator.

Agent code is operator code: it runs inside the engine. It acts only through the
context it is given (``context.delegate``, ``context.call_tool``,
``context.post_to_board``, ``context.read_board``), so each step is decided by
the policy, approved where needed, sandboxed and audited.
"""

from __future__ import annotations

import re

from engine.agents import AgentContext, BaseAgent

_ASK = re.compile(r"(?i)\bplan (?:a|my) day in (?P<city>[a-z][a-z -]{0,40}[a-z])")
_BOARD = re.compile(r"(?i)\b(?:board|my plans?)\b")
# A sample day: (what, cost in EUR).
_DAY = (("a museum in the morning", "17"), ("lunch", "25"), ("two metro rides", "2*2.15"))


class Planner(BaseAgent):
    async def process_message(self, message: str, context: AgentContext) -> str | None:
        found = _ASK.search(message)
        if found is None:
            if _BOARD.search(message):
                return await self._show_board(context)
            return 'Ask me to "plan a day in Paris" (or another city), or "what is on the board".'
        city = found.group("city").strip().title()
        weather = await context.delegate("weather", f"weather in {city.lower()}")
        if weather.ok:
            await context.say(f"Weather: {weather.output['answer'].strip()}\n")
        else:
            await context.say(f"(I could not get the weather: {weather.reason})\n")
        plan = f"Plan for {city}: " + ", then ".join(what for what, _ in _DAY) + "."
        await context.say(plan + "\n")
        total = await context.call_tool("calculator", {"expression": " + ".join(cost for _, cost in _DAY)})
        if not total.ok:
            return f"(I could not add up the costs: {total.reason})"
        cost = f"Estimated cost: {total.output['result']} EUR."
        # Left on the session board, where the session's other agents (and later turns) find it.
        await context.post_to_board(f"{plan} {cost}")
        return cost

    async def _show_board(self, context: AgentContext) -> str:
        board = await context.read_board()
        if not board.ok:
            return f"(I could not read the board: {board.reason})"
        notes = board.output["notes"]
        if not notes:
            return "The board is empty."
        return "\n".join(f"#{note['seq']} ({note['agent']}): {note['text']}" for note in notes)
