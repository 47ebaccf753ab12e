"""One chat on one session: the event printer, the input loop and the reconnect loop.

State shared by the two tasks lives on :class:`Chat`.  The event printer shows
every server frame and keeps the state current (a turn or a direct call in
flight, the actions waiting for this user's answer); the input loop reads lines
and runs them as messages, answers or commands.  Whenever the state changes the
printer wakes the input loop, which may be waiting for a line that an answer
(or the end of a turn) makes due.

Connection loss: the printer notices (or a send fails), both tasks stop, and
:meth:`Chat.run` reconnects with backoff and resumes the session
(``agent_connect`` with its id).  What ran on the lost connection (a turn, a
direct call) was cancelled by the server; the chat says so.  After a
reconnect it asks the server what still waits for this user's answer
(``action_list``) and asks again.  A token that expired ends the chat instead.

Resource handling: each connection, with both tasks, lives in one nursery;
leaving the chat cancels them and closes the connection (a turn still running
on the server is abandoned there; the session stays resumable).
"""

from __future__ import annotations

import functools
import json
import sys
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import attrs

from ...suggest import unknown_name
from ._input import INTERRUPT, LineReader, TerminalReader
from ._output import Output, shown, shown_body
from ._render import compact, error_text, short, value_lines

if TYPE_CHECKING:
    import trio

    from ...client import Client
    from ...protocol import ActionList, AgentAction, ServerFrame, ToolInfo

HELP = (
    "commands: /stop (the turn) /end (the session) /pause /resume /tools /call TOOL {json} /read URI "
    "/pending /approve ID /deny ID [reason] /help /quit; anything else is a message to the agent"
)
BUSY = "a turn is running; wait for the answer or /stop it"
BUSY_CALL = "a direct call is running; wait for its result"
ADMIN_NOTE = "note: nobody approves their own level-2 request; another admin must"
ANSWER_AGAIN = "answer y (yes) or n (no); an empty line means no"
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
class Chat:
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
    # Action ids seen (prompts, /pending), for /approve by a unique prefix.
    seen_actions: dict[str, str] = attrs.field(factory=dict)
    tools: dict[str, ToolInfo] | None = None
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

    # --- connections ------------------------------------------------------------------

    async def run(self, connect: Connect, agent: str, session_id: str | None) -> int:
        """Converse until the user leaves; reconnect (resuming the session) when the connection drops."""
        import trio

        from ...client import CannotConnect, Refused

        self.agent, failures, last_error = agent, 0, ""
        while True:
            self._lost, self._lost_code = None, None
            try:
                async with connect() as client:
                    self.client = client
                    attached = await self._attach(session_id)
                    if attached == "fatal":
                        return 1
                    if attached == "ok":
                        connected_at = trio.current_time()
                        await self._converse_while_connected()
                        if self._over:
                            return self.exit_code
                        if trio.current_time() - connected_at >= STABLE_S:
                            # A connection that held for a while starts a new count: a server
                            # that drops every connection at once still exhausts the attempts.
                            failures = 0
            except Refused as exc:
                if not self.session_id or exc.status_code not in _BUSY_STATUS:
                    print(f"sconnect chat: {rejection(exc.status_code, exc.reason)}", file=sys.stderr)
                    return 1
                last_error = rejection(exc.status_code, exc.reason)
            except CannotConnect as exc:
                if not self.session_id:
                    print(f"sconnect chat: {exc}", file=sys.stderr)
                    return 1
                last_error = exc.reason
            if self._lost_code == _CLOSE_TOKEN_EXPIRED or (not self.session_id and self._lost is not None):
                # Reconnecting cannot help: the token is dead, or no session was ever started.
                print(f"sconnect chat: {closed_text(self._lost_code, self._lost, self.session_id)}", file=sys.stderr)
                return 1
            failures += 1
            if failures > self.retries:
                resume = f"resume later with --session {shown(self.session_id)}"
                why = closed_text(self._lost_code, self._lost, self.session_id) if self._lost is not None else (
                    f"cannot reach the server ({shown(last_error)}); {resume}"
                )
                gave_up = f" (gave up after {self.retries} reconnection attempts)" if self.retries else ""
                print(f"sconnect chat: {why}{gave_up}", file=sys.stderr)
                return 1
            delay_s = min(0.5 * 2 ** (failures - 1), 8.0)
            why = shown(last_error) if self._lost is None else closed_text(self._lost_code, self._lost, "")
            self.out.note(
                "reconnecting", f"[connection] {why}; reconnecting in {delay_s:g}s "
                f"(attempt {failures} of {self.retries})", colour="yellow", attempt=failures,
            )
            await trio.sleep(delay_s)

    async def _attach(self, session_id: str | None) -> str:
        """Start or resume the session on the new connection: "ok", "fatal" (said why) or "lost"."""
        from trio_websocket import ConnectionClosed

        from ...client import ClientClosed, ServerError

        assert self.client is not None
        again = bool(self.session_id)
        wanted = self.session_id or session_id
        try:
            if wanted:
                state = await self.client.resume_session(wanted, self.agent)
            else:
                state = await self.client.start_session(self.agent)
        except ServerError as exc:
            verb = f"resume session {shown(wanted)}" if wanted else f"start agent {shown(repr(self.agent))}"
            print(f"sconnect chat: cannot {verb}: [{exc.code}] {shown(exc.message)}", file=sys.stderr)
            return "fatal"
        except (ClientClosed, ConnectionClosed):
            self._lost_connection()
            if not again:
                print(f"sconnect chat: {closed_text(self._lost_code, self._lost, wanted or '')}", file=sys.stderr)
                return "fatal"
            return "lost"
        self.session_id, self.state = state.session_id, str(state.state)
        if self.state in _BUSY_STATES:
            # Resumed while a turn runs (followed from another connection): wait for its answer.
            self._set_busy("", "turn")
        if again:
            self.out.note(
                "reconnected", f"[connection] reconnected; session {shown(self.session_id)} resumed ({self.state})",
                colour="green", session_id=self.session_id, state=self.state,
            )
            try:
                await self._ask_what_waits()
            except (ClientClosed, ConnectionClosed):
                self._lost_connection()
                return "lost"
            return "ok"
        self.out.note(
            "session", f"session {shown(self.session_id)} (agent {shown(state.agent)}, {self.state}); "
            f"resume later with --session {shown(self.session_id)}", session_id=self.session_id, state=self.state,
        )
        self.out.line(HELP)
        if self.admin:
            self.out.line(ADMIN_NOTE)
        return "ok"

    async def _converse_while_connected(self) -> None:
        import trio

        self._changed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._show_events, nursery.cancel_scope)
            nursery.start_soon(self._watch_foreign)
            await self._converse()
            nursery.cancel_scope.cancel()

    def _lost_connection(self) -> None:
        """The connection is gone: forget what ran on it (the server cancelled it)."""
        if self._lost is not None:
            return
        client = self.client
        closed = client.ws.closed if client is not None else None
        self._lost_code = client.close_code if client is not None else None
        self._lost = (client.lost_reason if client is not None else None) or (closed.reason if closed else "") or ""
        self.out.end_line()
        if self.busy is not None and self.session_id:
            what = "turn" if self.busy_kind == "turn" else f"direct {self.busy_kind}"
            self.out.note("lost", f"[connection] the {what} in progress was cancelled with the connection",
                          colour="yellow")
        self.busy, self.turn_streamed = None, False
        self.pending.clear()
        self.requests.clear()
        self.answers.clear()

    # --- events from the server -------------------------------------------------------

    async def _show_events(self, scope: trio.CancelScope) -> None:
        from ...client import ClientClosed

        assert self.client is not None
        while True:
            try:
                event = await self.client.next_event()
            except ClientClosed:
                self._lost_connection()
                scope.cancel()
                return
            self.out.frame(event)
            try:
                over = await self._show(event)
            except ClientClosed:
                over = False
                self._lost_connection()
            if over or self._lost is not None:
                self._over = over
                scope.cancel()
                return
            self._notify()

    async def _show(self, event: ServerFrame) -> bool:
        """Print one event and update the chat's state; True when the chat is over."""
        from ...protocol import (
            AgentAction,
            AgentResponse,
            AgentResult,
            AgentState,
            ErrorFrame,
            ResourceResponse,
            ResponseToken,
            ToolList,
        )

        mine = bool(self.session_id) and getattr(event, "session_id", None) == self.session_id
        reply_to = getattr(event, "reply_to", None)
        request = self.requests.get(reply_to) if reply_to else None
        match event:
            case ResponseToken() if mine:
                self.turn_streamed = True
                self.out.write(shown_body(event.token))
            case AgentResponse() if mine:
                if not self.turn_streamed:
                    self.out.write(shown_body(event.content))
                if event.cancelled:
                    self.out.note("cancelled", "[turn cancelled]", colour="yellow")
                self._end_busy()
            case AgentAction():
                await self._show_action(event, mine or request is not None)
            case AgentResult() if mine or request is not None:
                self._show_result(event, request)
            case ResourceResponse() if request is not None:
                self._show_resource(event)
            case AgentState() if mine:
                return self._show_state(str(event.state))
            case ErrorFrame():
                self._show_error(event)
            case ToolList():
                # The first arrives with every connection; later ones follow a config reload.
                if self.tools is not None and reply_to is None:
                    self.out.note("tools_changed", "[tools] the server's tool list changed (/tools shows it)")
                self.tools = {tool.name: tool for tool in event.tools}
        return False

    async def _show_action(self, action: AgentAction, mine: bool) -> None:
        self.names[action.action_id] = action.name
        approver = str(action.approver)
        if not action.requires_approval:
            self.out.line(self._describe(action, None))
        elif (mine and approver == "user") or (not mine and approver == "admin"):
            # Level 1 of this user, or (this token being an admin's) level 2 of another user.
            if any(asked.action.action_id == action.action_id for asked in self.pending):
                return  # sent again after a reconnect or a takeover: already asked
            requester = None
            if not mine:
                requester = await self._requester(action.action_id)
                if requester is None:
                    return  # no longer waits (answered meanwhile), or not this user's to answer
            self._seq += 1
            self.pending.append(Asked(action, requester, self._seq))
            self.seen_actions[action.action_id] = action.name
            if len(self.pending) == 1:
                self._ask(self.pending[0])
        elif approver == "admin":
            self.out.line(f"{self._describe(action, None)} — needs approval by an admin: waiting for one to answer")
        else:
            self.out.line(f"{self._describe(action, None)} — needs approval by {approver}")

    async def _requester(self, action_id: str) -> str | None:
        """Who asked for a level-2 action (the server's ``action_list`` says); None when it no longer waits."""
        from ...client import ServerError

        assert self.client is not None
        try:
            listing = await self.client.list_actions()
        except ServerError:
            return "another user"
        for item in listing.actions:
            if item.action_id == action_id:
                return item.requester
        return None

    def _describe(self, action: AgentAction, requester: str | None) -> str:
        tag = self.out.paint("[action]", "yellow")
        text = f"{tag} {shown(action.name)} {compact(action.arguments)} level {action.level}"
        if requester is not None:
            where = f"session {short(action.session_id)}" if action.session_id else "a direct tool call"
            text += f" (requested by {shown(requester)}, {where})"
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

    def _show_result(self, result: Any, request: tuple[str, str] | None) -> None:
        name = self.names.pop(result.action_id, request[1] if request else "action")
        status = str(result.status)
        text = self.out.paint(f"[result] {shown(name)} {status}", "green" if status == "ok" else "red")
        if status != "ok":
            text += f": {error_text(result.output)}"
        self.out.line(text)
        if request is not None and status == "ok":
            for line in value_lines(result.output):
                self.out.line(line)
        self._drop_pending(result.action_id, f"{status} ({error_text(result.output)})" if status != "ok" else status)
        if request is not None:
            self.requests.pop(result.reply_to, None)
            if self.busy == result.reply_to:
                self._end_busy()

    def _show_resource(self, response: Any) -> None:
        self.requests.pop(response.reply_to, None)
        cut = ", truncated" if response.truncated else ""
        self.out.line(self.out.paint(f"[resource] {shown(response.uri)} ({shown(response.mime_type)}{cut})", "green"))
        if response.content is not None:
            for line in value_lines(response.content):
                self.out.line(line)
        else:
            size = len(response.content_base64 or "") * 3 // 4
            self.out.line(f"  (about {size} bytes of binary content; --json shows it as base64)")
        if self.busy == response.reply_to:
            self._end_busy()

    def _show_error(self, error: Any) -> None:
        self.out.line(self.out.paint(f"[error {error.code}] {shown(error.message)}", "red"))
        reply_to = error.reply_to
        if reply_to is None:
            return
        self.requests.pop(reply_to, None)
        action_id = self.answers.pop(reply_to, None)
        if action_id is not None and str(error.code) in _GONE:
            self._drop_pending(action_id, None)
        if self.busy == reply_to:
            self._end_busy()

    def _show_state(self, state: str) -> bool:
        previous, self.state = self.state, state
        if state in _BUSY_STATES or (state == "active" and previous in _BUSY_STATES):
            return False
        self.out.note("state", self.out.paint(f"[state] {state}", "dim"), state=state)
        if state == "terminated":
            self.out.note("over", "the session is over")
            return True
        return False

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

    async def _watch_foreign(self) -> None:
        """Drop other users' questions that stopped waiting (answered by another admin, cancelled,
        expired): nobody tells this connection, so ask the server now and then."""
        import trio

        from ...client import ClientClosed, ServerError

        assert self.client is not None
        while True:
            await trio.sleep(FOREIGN_POLL_S)
            if not any(asked.requester is not None for asked in self.pending):
                continue
            asked_before = self._seq
            try:
                listing = await self.client.list_actions()
            except ServerError:
                continue
            except ClientClosed:
                return  # the event printer notices and ends the connection's tasks
            waiting = {item.action_id for item in listing.actions}
            for asked in list(self.pending):
                if asked.requester is not None and asked.seq <= asked_before and asked.action.action_id not in waiting:
                    self._drop_pending(asked.action.action_id, "answered by another admin, cancelled or expired")
            self._notify()

    async def _ask_what_waits(self) -> None:
        """After a reconnect: ask again about every action that still waits for this user."""
        from ...client import ServerError

        assert self.client is not None
        try:
            listing = await self.client.list_actions()
        except ServerError:
            return
        for item in listing.actions:
            if any(asked.action.action_id == item.action_id for asked in self.pending):
                continue
            from ...protocol import AgentAction, Executor

            action = AgentAction(
                action_id=item.action_id, kind=item.kind, name=item.name, arguments=item.arguments,
                level=item.level, requires_approval=True, approver=item.approver, executor=Executor.SERVER,
                reason=item.reason, session_id=item.session_id,
            )
            self.names[item.action_id] = item.name
            self.seen_actions[item.action_id] = item.name
            self._seq += 1
            # Level 1 is always this user's own; a level-2 action listed here is another user's.
            foreign = str(item.approver) == "admin"
            self.pending.append(Asked(action, item.requester if foreign else None, self._seq))
        if self.pending:
            self.out.note("waiting", f"[connection] {len(self.pending)} action(s) still wait for your answer")
            self._ask(self.pending[0])

    # --- input from the user ----------------------------------------------------------

    async def _converse(self) -> None:
        """Read and act on lines until the user leaves (``_over``) or the connection drops."""
        from trio_websocket import ConnectionClosed

        from ...client import ClientClosed

        try:
            while True:
                if self.busy is None and not self.pending:
                    # Idle: the next line, in order.
                    self.reading = True
                    self._prompt_if_idle()
                    try:
                        line = await self.lines.readline()
                    finally:
                        self.reading = False
                else:
                    # Busy: take a fresh line (one written ahead waits for the end of the turn),
                    # or with an approval pending the next line; look again whenever the state changes.
                    line = await self._line_or_change(fresh=not self.pending)
                    if line is None:
                        if self.pending and self.lines.ended:
                            self.out.end_line()
                            self._over = True
                            return
                        continue
                if line is None:
                    self.out.end_line()
                    self._over = True
                    return
                if self.terminal and line == INTERRUPT:
                    # Ctrl-C at the terminal: stop the turn when one runs, else leave (exit 130).
                    if self.busy is None or self.busy_kind != "turn":
                        self.out.end_line()
                        self.exit_code, self._over = 130, True
                        return
                    line = "/stop"
                if self.lines.echo:
                    if self.pending or self.busy is None:
                        self.out.write(line + "\n")  # after the prompt or the question
                    else:
                        self.out.line(line)
                self.out.mid_line = False  # the line's newline (echoed by a terminal, or by us) ended it
                text = line.strip()
                if text.startswith("/"):
                    if not await self._command(text):
                        self._over = True
                        return
                    if self.pending:
                        self._ask(self.pending[0])
                elif self.pending:
                    await self._answer(text)
                elif self.busy is not None:
                    self.out.line(BUSY if self.busy_kind == "turn" else BUSY_CALL)
                elif text:
                    await self._send(line)
        except (ClientClosed, ConnectionClosed):
            self._lost_connection()

    async def _line_or_change(self, *, fresh: bool) -> str | None:
        """The next fresh line (with ``fresh``) or next line; None when the chat's state changed first."""
        import trio

        changed = self._changed
        assert changed is not None
        async with trio.open_nursery() as nursery:

            async def first(wait: Any) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, changed.wait)
            nursery.start_soon(first, functools.partial(self.lines.wait_line, fresh=fresh))
        if changed.is_set():
            return None
        return self.lines.take_fresh() if fresh else self.lines.next_line()

    async def _answer(self, text: str) -> None:
        answer = text.lower()
        if answer not in ("y", "yes", "n", "no", ""):
            self.out.line(ANSWER_AGAIN)
            self._ask(self.pending[0])
            return
        await self._send_answer(self.pending[0].action.action_id, answer in ("y", "yes"), None)

    async def _send_answer(self, action_id: str, approved: bool, reason: str | None) -> None:
        from ...protocol import ActionApproval, new_id

        assert self.client is not None
        frame = ActionApproval(id=new_id(), action_id=action_id, approved=approved, reason=reason)
        self.answers[frame.id] = action_id
        await self.client.send(frame)
        verdict = "approved" if approved else "denied"
        self.out.note(verdict, verdict, action_id=action_id)
        self._drop_pending(action_id, None)

    async def _send(self, content: str) -> None:
        from ...protocol import UserMessage, new_id

        assert self.client is not None
        frame = UserMessage(id=new_id(), session_id=self.session_id, content=content)
        await self._start_request(frame, "turn")

    async def _start_request(self, frame: Any, kind: str) -> None:
        assert self.client is not None
        # Busy before sending: the server's answer can arrive before send returns.
        self._set_busy(frame.id, kind)
        # Lines already written (a pipe filled ahead) wait for the answer; later ones act at once.
        self.lines.mark_ahead()
        await self.client.send(frame)

    # --- commands ---------------------------------------------------------------------

    async def _command(self, line: str) -> bool:
        """Run one slash command; False when the chat should end."""
        from ...client import ServerError

        assert self.client is not None
        command, _, rest = line.partition(" ")
        command, rest = command.lower(), rest.strip()
        try:
            if command in ("/quit", "/exit"):
                return False
            if command in ("/pause", "/resume", "/end"):
                state = await self.client.control(self.session_id, "stop" if command == "/end" else command[1:])
                self.state = str(state.state)
                self.out.note("state", self.out.paint(f"[state] {self.state}", "dim"), state=self.state)
                if self.state == "terminated":
                    self.out.note("over", "the session is over")
                    return False
            elif command == "/stop":
                if self.busy is not None and self.busy_kind != "turn":
                    self.out.line("a direct call cannot be stopped: it ends with its result or its timeout")
                else:
                    # The cancelled turn's agent_response (an event) says "[turn cancelled]".
                    state = await self.client.cancel_turn(self.session_id)
                    self.state = str(state.state)
            elif command == "/tools":
                tool_list = await self.client.list_tools()
                self.out.frame(tool_list)
                self.tools = {tool.name: tool for tool in tool_list.tools}
                self._print_tools(tool_list.tools)
            elif command == "/call":
                await self._call(rest)
            elif command == "/read":
                await self._read(rest)
            elif command == "/pending":
                listing = await self.client.list_actions()
                self.out.frame(listing)
                self._print_pending(listing)
            elif command in ("/approve", "/deny"):
                await self._decide(command == "/approve", rest)
            elif command == "/help":
                self.out.line(HELP)
            else:
                self.out.line(f"unknown command {shown(command)}; {HELP}")
        except ServerError as exc:
            self.out.line(self.out.paint(f"[error {exc.code}] {shown(exc.message)}", "red"))
        return True

    async def _call(self, rest: str) -> None:
        from ...protocol import ToolCall, new_id

        usage = 'usage: /call TOOL {json arguments}, e.g. /call calculator {"expression": "2+2"}'
        if self.busy is not None:
            self.out.line(BUSY if self.busy_kind == "turn" else BUSY_CALL)
            return
        name, _, text = rest.partition(" ")
        if not name:
            self.out.line(usage)
            return
        try:
            arguments = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            self.out.line(f"the arguments are not JSON ({exc}); {usage}")
            return
        if not isinstance(arguments, dict):
            self.out.line(f"the arguments must be a JSON object, not {type(arguments).__name__}; {usage}")
            return
        if self.tools is not None and name not in self.tools:
            self.out.line(f"{unknown_name('tool', shown(name), self.tools)}; /tools lists them")
            return
        frame = ToolCall(id=new_id(), name=name, arguments=arguments)
        self.requests[frame.id] = ("call", name)
        await self._start_request(frame, "call")

    async def _read(self, uri: str) -> None:
        from ...protocol import ResourceRequest, new_id

        if self.busy is not None:
            self.out.line(BUSY if self.busy_kind == "turn" else BUSY_CALL)
            return
        if not uri or " " in uri:
            self.out.line("usage: /read URI, e.g. /read file://workspace/notes.txt")
            return
        frame = ResourceRequest(id=new_id(), uri=uri)
        self.requests[frame.id] = ("read", uri)
        await self._start_request(frame, "read")

    async def _decide(self, approved: bool, rest: str) -> None:
        verb = "/approve" if approved else "/deny"
        given, _, reason = rest.partition(" ")
        if not given:
            self.out.line(f"usage: {verb} ID [reason] (/pending lists the ids; a unique prefix is enough)")
            return
        known = set(self.seen_actions) | {asked.action.action_id for asked in self.pending}
        matches = sorted(action_id for action_id in known if action_id.startswith(given))
        if len(matches) > 1 and given not in matches:
            self.out.line(f"{len(matches)} actions start with {shown(given)!r}: "
                          f"{', '.join(map(shown, matches))}; give more of the id")
            return
        # An id unknown here is sent as typed: the server has the last word (not_found, forbidden, ...).
        action_id = matches[0] if len(matches) == 1 else given
        await self._send_answer(action_id, approved, reason.strip() or None)

    def _print_tools(self, tools: Any) -> None:
        # The server lists the tools this caller may call; it does not say which of them the agent uses.
        if not tools:
            self.out.line("no tools are available to you to call directly")
            return
        self.out.line("tools you may call directly (tool_call):")
        width = max(len(tool.name) for tool in tools)
        for tool in sorted(tools, key=lambda t: t.name):
            self.out.line(f"  {shown(tool.name):<{width}}  level {tool.level}  {shown(tool.description)}")

    def _print_pending(self, listing: ActionList) -> None:
        if not listing.actions:
            self.out.line("nothing waits for your answer")
            return
        self.out.line(f"{len(listing.actions)} action(s) wait for your answer (/approve ID, /deny ID reason):")
        for item in listing.actions:
            self.seen_actions[item.action_id] = item.name
            where = f"session {short(item.session_id)}" if item.session_id else "a direct tool call"
            self.out.line(
                f"  {short(item.action_id)}  {shown(item.name)} {compact(item.arguments)} level {item.level}"
                f" — requested by {shown(item.requester)} ({where}), approver {item.approver}, "
                f"expires in {item.expires_in_s:.0f}s"
            )
