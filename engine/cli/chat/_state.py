"""The chat's shared state and the small steps every part of it takes: ask a question, withdraw
one, mark the chat busy or idle, send an answer or a request.

The event printer (:mod:`._events`), the commands (:mod:`._commands`) and the
input and reconnect loops (:mod:`._chat`) all work on one :class:`ChatState`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import attrs

from ._input import LineReader, TerminalReader
from ._output import Output, shown
from ._render import compact, short

if TYPE_CHECKING:
    import trio

    from ...client import Client
    from ...protocol import AgentAction, ToolInfo

HELP = (
    "commands: /stop (the turn) /end (the session) /pause /resume /tools /call TOOL {json} /read URI "
    "/pending /approve ID [--session | --for 1h] [--match ARG=same|program] /deny ID [reason] /grants [all] "
    "/revoke GRANT_ID /good [comment] /bad [comment] /memory [forget ID|all] /help /quit; at approve? answer y, "
    "n, s (yes, for this session) or a duration such as 1h (yes, for that long); anything else is a message to "
    "the agent"
)
BUSY = "a turn is running; wait for the answer or /stop it"
BUSY_CALL = "a direct call is running; wait for its result"
ADMIN_NOTE = "note: nobody approves their own level-2 request; another admin must"
ANSWER_AGAIN = ("answer y (yes), n (no), s (yes, for this session) or a duration such as 1h (yes, for that "
                "long); an empty line means no")
# WebSocket close codes the server uses (engine.server.connection).
_CLOSE_NORMAL = (1000, 1001)
_CLOSE_TOKEN_EXPIRED = 4001
# Turn-internal lifecycle states: shown implicitly by the streamed answer, not printed.
_BUSY_STATES = ("processing", "tool_use")
# Error codes answering an approval that mean: it no longer waits.
_GONE = ("already_decided", "expired", "not_found")
# A full server (too many connections) refuses for now: worth another attempt.
_BUSY_STATUS = (429, 503)
# A connection that lasted this long resets the count of reconnection attempts.
STABLE_S = 30.0
# How often the chat asks whether other users' actions it shows still wait (nobody tells it otherwise).
FOREIGN_POLL_S = 2.0

Connect = Callable[[], AbstractAsyncContextManager["Client"]]


def closed_text(code: int | None, reason: str | None, session_id: str) -> str:
    """Why the connection closed, in words, with how to resume ``session_id`` (when there is one)."""
    session_id = shown(session_id)
    resume = f"; resume later with --session {session_id}" if session_id else ""
    if code in _CLOSE_NORMAL:
        return f"the server closed the connection{resume}"
    if code == _CLOSE_TOKEN_EXPIRED:
        again = f" and resume with --session {session_id}" if session_id else ""
        return f"your token expired; get a new one{again}"
    if code is None:
        why = f" ({shown(reason)})" if reason else ""
        return f"the connection was lost{why}{resume}"
    return f"the connection closed (code {code}{': ' + shown(reason) if reason else ''}){resume}"


def rejection(status: int, reason: str) -> str:
    """The server's refusal of the handshake, in words."""
    if status == 401:
        text = "the server refused the token (HTTP 401)"
    elif status == 404:
        text = "no WebSocket endpoint at this URL (HTTP 404); use the URL `sconnect serve` prints, path included"
    else:
        text = f"the server refused the connection (HTTP {status})"
    return f"{text}: {shown(reason)}" if reason else text


@attrs.define(eq=False)
class Asked:
    """An action waiting for this user's answer; ``requester`` is None for this user's own."""

    action: AgentAction
    requester: str | None
    # Arrival order, to tell which actions an `action_list` answer can speak about.
    seq: int


@attrs.define(eq=False)


@attrs.define(eq=False)
class ChatState:
    out: Output
    lines: LineReader | TerminalReader
    # The token holds the admin role: level-2 actions of others are asked about here.
    admin: bool = False
    # Reconnection attempts after a lost connection before giving up.
    retries: int = 5
    client: Client | None = None
    agent: str = ""
    session_id: str = ""
    state: str = ""
    # The id of the frame whose answer is awaited (user_message, tool_call, resource_request), and its kind.
    busy: str | None = None
    busy_kind: str = ""
    turn_streamed: bool = False
    # Actions waiting for this user's answer, oldest first; the head's question is on screen.
    pending: deque[Asked] = attrs.field(factory=deque)
    names: dict[str, str] = attrs.field(factory=dict)
    # Direct calls and reads in flight (their frames arrive as events): frame id -> (kind, name).
    requests: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    # Approvals sent: frame id -> action id (a refusal comes back naming the frame).
    answers: dict[str, str] = attrs.field(factory=dict)
    # Questions answered with a remember, by the answer's frame id: asked again if the server refuses it.
    remembering: dict[str, Asked] = attrs.field(factory=dict)
    # Action ids seen (prompts, /pending), for /approve by a unique prefix.
    seen_actions: dict[str, str] = attrs.field(factory=dict)
    tools: dict[str, ToolInfo] | None = None
    # The turn id of this session's last answer (what /good and /bad rate), and memory ids /memory listed.
    last_turn: str = ""
    memory_ids: list[str] = attrs.field(factory=list)
    reading: bool = False
    exit_code: int = 0
    _changed: trio.Event | None = None
    _seq: int = 0
    _over: bool = False
    _lost: str | None = None
    _lost_code: int | None = None

    @property
    def terminal(self) -> bool:
        return isinstance(self.lines, TerminalReader)

    def _describe(self, action: AgentAction, requester: str | None) -> str:
        tag = self.out.paint("[action]", "yellow")
        text = f"{tag} {shown(action.name)} {compact(action.arguments)} level {action.level}"
        if requester is not None:
            where = f"session {short(action.session_id)}" if action.session_id else "a direct tool call"
            text += f" (requested by {shown(requester)}, {where})"
        if action.grant is not None:
            text += f" — approved by grant {action.grant.grant_id} of {shown(action.grant.made_by)}"
        return text

    def _ask(self, asked: Asked) -> None:
        action = asked.action
        described = f"{self._describe(action, asked.requester)} — needs approval by {action.approver}"
        self.out.end_line()
        if self.out.json:
            self.out.note("question", "answer y or n (or /approve, /deny)", action_id=action.action_id)
        elif self.terminal:
            self.out.line(described)
            self.lines.set_prompt("approve? [y/N] ")
        else:
            self.out.write(f"{described}: approve? [y/N] ")

    def _drop_pending(self, action_id: str, why: str | None) -> None:
        """Forget a question (answered, cancelled, decided elsewhere); ``why`` says so on screen."""
        for asked in list(self.pending):
            if asked.action.action_id == action_id:
                was_head = asked is self.pending[0]
                self.pending.remove(asked)
                if why is not None:
                    self.out.note("withdrawn", f"[action] {shown(asked.action.name)} ({short(action_id)}) no longer "
                                  f"waits for your answer: {why}", colour="yellow", action_id=action_id)
                if was_head and self.pending:
                    self._ask(self.pending[0])
        self._prompt_if_idle()

    def _set_busy(self, frame_id: str, kind: str) -> None:
        self.busy, self.busy_kind, self.turn_streamed = frame_id, kind, False
        if self.terminal and not self.pending:
            self.lines.set_prompt("")

    def _end_busy(self) -> None:
        self.out.end_line()
        self.busy, self.turn_streamed = None, False
        self._prompt_if_idle()

    def _prompt_if_idle(self) -> None:
        if self.busy is None and not self.pending:
            if self.terminal:
                self.lines.set_prompt("> ")
            elif self.reading:
                self.out.write("> ")

    def _notify(self) -> None:
        import trio

        assert self._changed is not None
        self._changed.set()
        self._changed = trio.Event()

    async def _send_answer(
        self, action_id: str, approved: bool, reason: str | None, *, known: bool = True, remember: Any = None
    ) -> None:
        from ...protocol import ActionApproval, new_id

        assert self.client is not None
        frame = ActionApproval(id=new_id(), action_id=action_id, approved=approved, reason=reason, remember=remember)
        self.answers[frame.id] = action_id
        if remember is not None:
            asked = next((a for a in self.pending if a.action.action_id == action_id), None)
            if asked is not None:
                self.remembering[frame.id] = asked
        await self.client.send(frame)
        verdict = "approved" if approved else "denied"
        if remember is not None:
            # No frame confirms a grant: a refusal comes back as an error, and then nothing counted.
            verdict = "approval sent, asking to remember it (an error follows if the policy refuses; /grants lists it)"
        if known:
            self.out.note(verdict, verdict, action_id=action_id)
        else:
            # Not an action this chat has seen: the server decides, and its error (if any) follows.
            self.out.note(verdict, f"sent: {'approve' if approved else 'deny'} {action_id}", action_id=action_id)
        self._drop_pending(action_id, None)

    async def _start_request(self, frame: Any, kind: str) -> None:
        assert self.client is not None
        # Busy before sending: the server's answer can arrive before send returns.
        self._set_busy(frame.id, kind)
        # Lines already written (a pipe filled ahead) wait for the answer; later ones act at once.
        self.lines.mark_ahead()
        await self.client.send(frame)
