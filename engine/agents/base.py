"""The base class of custom agents written in Python, and the context they act through.

An agent file names its class with ``python: module:Class``; the class extends
:class:`BaseAgent` and implements :meth:`BaseAgent.process_message`.  For each
turn the engine makes a new instance and calls ``process_message`` with the
user's message (or the message another agent delegated) and an
:class:`AgentContext`.  Everything the agent does for the user goes through the
context, which is the engine's:

- ``say`` streams text to the user (the turn's answer is everything said, then
  the string ``process_message`` returns, if any);
- ``call_tool`` (alias ``request_tool_use``), ``read_resource``, ``delegate``,
  ``read_board`` and ``post_to_board`` are actions: each is decided by the policy, approved when its level or a
  rule asks for it, run in the sandbox, and audited, exactly as a model's tool
  calls are.  A tool outside the agent's ``tools:`` list, a host outside its
  ``resources:`` and an agent outside its ``delegates:`` are refused like any
  action the policy denies.  A refusal or failure is a result
  (:attr:`ActionResult.status` is not ``ok``), never an exception.

Bounds: a turn may ask for at most the agent's ``max_steps`` actions; one more
ends the turn ("stopped after N steps").  The turn ends with an error when it
takes longer than ``turn_timeout``, raises, or says more than
:data:`MAX_SAID_CHARS`; ``agent_control`` ``cancel``/``stop`` (chat ``/stop``)
cancels it.  Cancellation arrives as ``trio.Cancelled`` at the agent's next
``await``: clean up and let it propagate.

Trust: agent code is operator code.  It runs inside the engine process, with
the engine's privileges, like the engine's own code; the context is the only
*supported* way to act, and the only one that is decided, approved and
audited.  Install only agent code you would install as part of the server.
Blocking calls (file or network I/O without ``await``, ``time.sleep``) stall
every session of the server: use ``trio.to_thread.run_sync`` for them.  A step
that holds the event loop for 5 s without awaiting is interrupted (a watchdog,
engine/server/agentguard.py) and its turn ends with an error.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..errors import ScalyticsError

# The most text one turn may say (characters); past it the turn ends with an error.
MAX_SAID_CHARS = 1_000_000


class AgentError(ScalyticsError):
    """A custom agent broke one of its rules (what it returned, what it said); the message says which."""


@attrs.frozen
class ActionResult:
    """What an action came to: ``status`` as in ``agent_result`` (ok, error, denied, timeout,
    cancelled, limit_exceeded), its ``output`` (the tool's JSON output, the resource's
    content, the asked agent's ``{"agent", "answer"}``), and ``reason`` when not ok."""

    status: str
    output: Any
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class AgentContext(abc.ABC):
    """What an agent may know and do during one turn (implemented by the engine)."""

    @property
    @abc.abstractmethod
    def agent(self) -> str:
        """This agent's declared name."""

    @property
    @abc.abstractmethod
    def subject(self) -> str:
        """The user the turn is for (the token's ``sub``)."""

    @property
    @abc.abstractmethod
    def session_id(self) -> str:
        """The session the turn belongs to (a delegated turn: the asking agent's session)."""

    @property
    @abc.abstractmethod
    def history(self) -> Sequence[Mapping[str, Any]]:
        """The conversation before this message (``role``/``content`` mappings); empty for a delegated turn."""

    @property
    @abc.abstractmethod
    def delegated_by(self) -> str | None:
        """The agent that asked for this turn, or None when the user did."""

    @abc.abstractmethod
    async def say(self, text: str) -> None:
        """Stream ``text`` as part of the answer (a delegated turn's text goes back to the asking agent)."""

    @abc.abstractmethod
    async def call_tool(self, name: str, arguments: Mapping[str, Any]) -> ActionResult:
        """Call one of this agent's tools through policy, approval, sandbox and audit."""

    async def request_tool_use(self, name: str, arguments: Mapping[str, Any]) -> ActionResult:
        """The founding document's name for :meth:`call_tool`."""
        return await self.call_tool(name, arguments)

    @abc.abstractmethod
    async def read_resource(self, uri: str) -> ActionResult:
        """Read a resource (one of this agent's hosts) through policy, approval and audit."""

    @abc.abstractmethod
    async def delegate(self, agent: str, message: str) -> ActionResult:
        """Ask one of this agent's ``delegates`` (``agent.delegate`` in policy); output ``{"agent", "answer"}``."""

    @abc.abstractmethod
    async def read_board(self) -> ActionResult:
        """The session board's notes (``board: read`` or ``post``); output ``{"uri", "notes": [{"seq",
        "agent", "text", "time"}]}``."""

    @abc.abstractmethod
    async def post_to_board(self, text: str) -> ActionResult:
        """Leave a note on the session board for the session's other agents (``board: post``)."""


class BaseAgent(abc.ABC):
    """Extend this and implement :meth:`process_message`; see the module documentation.

    A new instance serves each turn: keep nothing on ``self`` that should outlive
    it (the conversation is in ``context.history``).  ``__init__`` takes no
    arguments.
    """

    @abc.abstractmethod
    async def process_message(self, message: str, context: AgentContext) -> str | None:
        """Answer ``message``; text said through ``context.say`` streams as it comes, and a
        returned string is said last.  Exceptions end the turn with an error."""
