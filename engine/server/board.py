"""The session board: notes the agents of one session leave for each other, read and posted under policy.

Every live session has one board, shared by its own agent and every agent it
delegates to (they run for the same session), so a planner can leave work for
another agent.  An agent's ``board:`` says what it may do: ``none`` (the
default), ``read``, or ``post`` (read and post).  A model reads with the
built-in tool ``read_board`` and posts with ``post_to_board``; a Python agent
with ``context.read_board()`` and ``context.post_to_board(text)``.

Both are actions (engine/server/actions.py ``perform_builtin``): reading is a
``resource.read`` of ``board://session``, posting is ``board.append`` on it
(level 0), so a policy rule must allow them (the shipped ``session-board``
does), the user sees each as an ``agent_action`` and its result, and each is
audited.  The board lives in memory as long as the session is live on the server
(a resumed session starts a new one); it holds at most :data:`MAX_NOTES`
notes of at most :data:`MAX_NOTE_CHARS` characters.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import attrs

from ..config.model import POST_TO_BOARD, READ_BOARD, Agent
from ..models import ToolDefinition
from ..protocol import ActionKind, ResultStatus
from .actions import Builtin, Caller, Outcome, perform_builtin, refuse_builtin

BOARD_URI = "board://session"
MAX_NOTES = 200
MAX_NOTE_CHARS = 4000

READ_BOARD_TOOL = ToolDefinition(
    name=READ_BOARD,
    description="Read the notes the agents of this session left on its board.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
)
POST_TO_BOARD_TOOL = ToolDefinition(
    name=POST_TO_BOARD,
    description="Leave a note on this session's board for the other agents of the session.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
_READ = Builtin("resource.read", BOARD_URI, ActionKind.RESOURCE, BOARD_URI, 0, "resource_read")
_POST = Builtin("board.append", BOARD_URI, ActionKind.TOOL, POST_TO_BOARD, 0)


@attrs.frozen
class Note:
    seq: int
    agent: str
    text: str
    time: float

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "agent": self.agent, "text": self.text, "time": self.time}


@attrs.define(eq=False)
class Board:
    """One session's notes, in the order they were posted."""

    notes: list[Note] = attrs.field(factory=list)

    def post(self, agent: str, text: str) -> Note:
        note = Note(len(self.notes) + 1, agent, text, time.time())
        self.notes.append(note)
        return note


def board_tools(agent: Agent) -> list[ToolDefinition]:
    """The board's built-in tools ``agent`` is offered."""
    return {"none": [], "read": [READ_BOARD_TOOL], "post": [READ_BOARD_TOOL, POST_TO_BOARD_TOOL]}[agent.board]


def _board(caller: Caller) -> Board | None:
    session = caller.conn.hub.sessions.get(caller.session_id or "")
    board = getattr(session, "board", None)
    return board if isinstance(board, Board) else None


async def read_board(caller: Caller, agent: Agent) -> Outcome:
    """The board's notes, for ``agent`` (``board: read`` or ``post``), if the policy allows."""
    board = _board(caller)
    if agent.board == "none":
        why = f"agent {agent.name!r} may not use the session board (board: none)"
        return await refuse_builtin(caller, _READ, {"uri": BOARD_URI}, why, ResultStatus.DENIED, {})
    if board is None:
        return await refuse_builtin(caller, _READ, {"uri": BOARD_URI}, "there is no session board here",
                                    ResultStatus.ERROR, {})

    async def execute(_action_id: str) -> tuple[ResultStatus, Any, str]:
        return ResultStatus.OK, {"uri": BOARD_URI, "notes": [note.as_json() for note in board.notes]}, ""

    return await perform_builtin(caller, _READ, {"uri": BOARD_URI}, {}, execute)


async def post_to_board(caller: Caller, agent: Agent, text: Any) -> Outcome:
    """Leave ``text`` on the board as ``agent`` (``board: post``), if the policy allows."""
    arguments = {"text": text}
    board = _board(caller)
    refuse = functools.partial(refuse_builtin, caller, _POST, arguments)
    if agent.board != "post":
        return await refuse(f"agent {agent.name!r} may not post to the session board (board: {agent.board})",
                            ResultStatus.DENIED, {})
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
        return await refuse(f"a note is text of 1 to {MAX_NOTE_CHARS} characters", ResultStatus.ERROR, {})
    if board is None:
        return await refuse("there is no session board here", ResultStatus.ERROR, {})
    if len(board.notes) >= MAX_NOTES:
        return await refuse(f"the session board is full ({MAX_NOTES} notes)", ResultStatus.LIMIT_EXCEEDED, {})

    async def execute(_action_id: str) -> tuple[ResultStatus, Any, str]:
        if len(board.notes) >= MAX_NOTES:  # filled while this post waited for its decision
            why = f"the session board is full ({MAX_NOTES} notes)"
            return ResultStatus.LIMIT_EXCEEDED, {"error": why}, why
        note = board.post(agent.name, text)
        return ResultStatus.OK, {"seq": note.seq}, ""

    return await perform_builtin(caller, _POST, arguments, {}, execute)


async def board_call(caller: Caller, agent: Agent, name: str, arguments: Any) -> Outcome:
    """A model's ``read_board`` / ``post_to_board`` tool call."""
    if name == READ_BOARD:
        return await read_board(caller, agent)
    text = arguments.get("text") if isinstance(arguments, dict) else None
    return await post_to_board(caller, agent, text)


BOARD_TOOLS = frozenset({READ_BOARD, POST_TO_BOARD})
