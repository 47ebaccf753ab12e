"""One chat on one session: the reconnect loop, the event printer task and the input loop.

State shared by the two tasks lives on :class:`Chat` (:mod:`._state`); showing
events is :mod:`._events`, running commands :mod:`._commands`.  The event printer shows
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
import sys
from typing import TYPE_CHECKING, Any

from ._commands import CommandsMixin
from ._events import EventsMixin
from ._input import INTERRUPT
from ._output import shown
from ._state import (
    _BUSY_STATES,
    _BUSY_STATUS,
    _CLOSE_TOKEN_EXPIRED,
    ADMIN_NOTE,
    ANSWER_AGAIN,
    BUSY,
    BUSY_CALL,
    HELP,
    STABLE_S,
    Connect,
    closed_text,
    rejection,
)

if TYPE_CHECKING:
    import trio


class Chat(EventsMixin, CommandsMixin):
    """One chat: the reconnect loop, the event printer task and the input loop."""

    # Fields all live on ChatState (its attrs __init__ is this class's); this adds behaviour only.
    __slots__ = ()

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
        self.remembering.clear()

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
        from ._remember import prompt_answer

        answer = prompt_answer(text)
        if answer is None:
            self.out.line(ANSWER_AGAIN)
            self._ask(self.pending[0])
            return
        approved, remember = answer
        if remember is not None and remember.scope == "session" and self.pending[0].action.session_id is None:
            self.out.line("a direct call belongs to no session: answer a duration such as 1h to remember it")
            self._ask(self.pending[0])
            return
        await self._send_answer(self.pending[0].action.action_id, approved, None, remember=remember)

    async def _send(self, content: str) -> None:
        from ...protocol import UserMessage, new_id

        assert self.client is not None
        frame = UserMessage(id=new_id(), session_id=self.session_id, content=content)
        await self._start_request(frame, "turn")
