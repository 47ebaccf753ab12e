"""``sconnect chat``: talk to an agent from a terminal (or a pipe), approving its actions.

::

    $ sconnect chat --url ws://127.0.0.1:8765/ --token "$TOKEN" --agent assistant
    session 3f2a… (agent assistant, active); resume later with --session 3f2a…
    > read notes.txt
    [action] read_file {"path": "notes.txt"} level 1 — needs approval by user: approve? [y/N] y
    [result] read_file ok
    notes.txt:
    buy milk
    > run sleep 15
    [action] shell {"command": "sleep 15"} level 2 — needs approval by an admin: waiting for one to answer
    /stop
    [state] terminated
    the session is over

A line is a message to the agent, an answer to a pending approval, or a
command: ``/pause``, ``/resume``, ``/stop`` (ends the session and the chat),
``/tools``, ``/help``, ``/quit``.  The answer streams in as it arrives; each
``agent_action`` is shown with its arguments and level.  An action waiting for
this user's approval takes the next input line as the answer: ``y``/``yes``
approves, ``n``/``no`` or an empty line denies (any case); a command is run and
the question asked again; anything else asks again.  One waiting for an admin is
shown as such.  When the token is an admin's, level-2 actions of other users
arrive as well and are asked about the same way; the chat then notes once that
the server lets nobody approve their own level-2 request (unless a policy rule
allows it), so another admin must.  ``/tools`` lists the tools this user may
call directly (``tool_call``); which of them the agent uses is its
configuration's business, which the server does not tell the client.

Input while a turn runs: commands act at once (``/stop`` cancels the turn and
kills its tool on the server; ``/pause`` shows the server's refusal, as a
session pauses only when idle), so stdin is watched during the turn.  A
message typed while a turn runs is not sent: the chat answers "a turn is
running; wait for the answer or /stop it".  Lines written ahead (already
buffered when the turn's message was sent, as with a pipe filled in advance)
keep their order instead: they wait for the end of the turn, except that a
pending approval takes the next of them as its answer.  So a pipe holding a
message, then its approval answer, then the next message is taken in that order.

Reading stdin: trio's I/O poller waits until fd 0 is readable, then one
``os.read`` takes what is there, so a wait can be cancelled without losing
input and the descriptor (which a terminal shares with the shell) is never
switched to non-blocking mode.  Descriptors the poller refuses (a regular file,
``/dev/null``) never block a read; they are read directly and count as
written ahead.

Exit codes: 0 after ``/quit``, end of input or ``/stop``; 1 when the token is
refused, the server cannot be reached, the session cannot be started or
resumed, or the connection drops (the message says why: the server closed it,
the token expired, or the close code and reason); 2 for usage errors; 130 on
Ctrl-C.  End of input while a turn runs ends the chat after the answer; while
an approval is pending, at once.

Resource handling: the connection, the event printer and the input loop live
in one nursery; leaving the chat cancels them all and closes the connection (a
turn still running on the server is abandoned there; the session stays
resumable).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import json
import os
import select
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import attrs

if TYPE_CHECKING:
    import trio

    from ..client import Client
    from ..protocol import AgentAction, ServerFrame

HELP = "commands: /pause /resume /stop /tools /help /quit; anything else is a message to the agent"
BUSY = "a turn is running; wait for the answer or /stop it"
ADMIN_NOTE = "note: nobody approves their own level-2 request; another admin must"
ANSWER_AGAIN = "answer y (yes) or n (no); an empty line means no"
# WebSocket close codes the server uses (engine.server.connection).
_CLOSE_NORMAL = (1000, 1001)
_CLOSE_TOKEN_EXPIRED = 4001
# Turn-internal lifecycle states: shown implicitly by the streamed answer, not printed.
_BUSY_STATES = ("processing", "tool_use")


def register(commands: Any) -> None:
    parser = commands.add_parser("chat", help="talk to an agent from the terminal")
    parser.add_argument(
        "--url", required=True, help="the server's WebSocket URL, path included (as `sconnect serve` prints it)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SCONNECT_TOKEN"),
        help="JWT to authenticate with (default: $SCONNECT_TOKEN)",
    )
    parser.add_argument("--agent", default="assistant", help="the declared agent to talk to (default assistant)")
    parser.add_argument("--session", metavar="ID", help="resume this session instead of starting a new one")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.token:
        print("sconnect chat: no token: pass --token or set SCONNECT_TOKEN", file=sys.stderr)
        return 2
    if urlsplit(args.url).scheme not in ("ws", "wss"):
        print(f"sconnect chat: --url must be a ws:// or wss:// URL, not {args.url!r}", file=sys.stderr)
        return 2
    # Trio and the client load only for this command, keeping the other commands quick to start.
    import trio

    try:
        return trio.run(chat, args.url, args.token, args.agent, args.session)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BaseExceptionGroup as group:
        if group.split(KeyboardInterrupt)[1] is None:
            print(file=sys.stderr)
            return 130
        raise


async def chat(
    url: str, token: str, agent: str, session_id: str | None, *, stdin_fd: int = 0, out: TextIO | None = None
) -> int:
    """Connect, start or resume the session, and converse until the user leaves; the exit code."""
    from trio_websocket import ConnectionRejected, HandshakeError

    from ..client import open_client

    output = Output(out or sys.stdout)
    try:
        async with open_client(url, token) as client:
            chat = Chat(client, output, LineReader(stdin_fd), admin=ADMIN_ROLE in _token_roles(token))
            return await chat.run(agent, session_id)
    except ConnectionRejected as exc:
        print(f"sconnect chat: {_rejection(exc.status_code, exc.body)}", file=sys.stderr)
    except HandshakeError as exc:
        cause = exc.__cause__ or exc.__context__
        why = f": {cause}" if cause else ""
        print(f"sconnect chat: cannot reach {url}{why}", file=sys.stderr)
    except OSError as exc:
        print(f"sconnect chat: cannot reach {url}: {exc}", file=sys.stderr)
    return 1


def _rejection(status: int, body: bytes | None) -> str:
    message = ""
    try:
        message = str(json.loads(body or b"{}").get("message", ""))
    except (ValueError, AttributeError):
        message = (body or b"").decode("utf-8", "replace").strip()
    if status == 401:
        text = "the server refused the token (HTTP 401)"
    elif status == 404:
        text = "no WebSocket endpoint at this URL (HTTP 404); use the URL `sconnect serve` prints, path included"
    else:
        text = f"the server refused the connection (HTTP {status})"
    return f"{text}: {message}" if message else text


ADMIN_ROLE = "admin"


def _token_roles(token: str) -> frozenset[str]:
    """The roles a JWT claims, read without verifying it: only for hints, the server decides.

    The claim is ``roles`` unless ``$SCONNECT_JWT_ROLES_CLAIM`` names another (as for the
    server; a dotted name such as ``realm_access.roles`` is followed).
    """
    try:
        payload = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return frozenset()
    name = os.environ.get("SCONNECT_JWT_ROLES_CLAIM") or "roles"
    value = claims.get(name) if isinstance(claims, dict) else None
    if value is None and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list):
        return frozenset()
    return frozenset(role for role in value if isinstance(role, str))


def _closed_text(code: int | None, reason: str | None, session_id: str) -> str:
    """Why the connection closed, in words, with how to resume ``session_id`` (when there is one)."""
    resume = f"; resume later with --session {session_id}" if session_id else ""
    if code in _CLOSE_NORMAL:
        return f"the server closed the connection{resume}"
    if code == _CLOSE_TOKEN_EXPIRED:
        again = f" and resume with --session {session_id}" if session_id else ""
        return f"your token expired; get a new one{again}"
    if code is None:
        return f"the connection was lost{resume}"
    return f"the connection closed (code {code}{': ' + reason if reason else ''}){resume}"


@attrs.define(eq=False)
class LineReader:
    """Lines from a file descriptor, read when input is there.

    A wait for input is ``trio.lowlevel.wait_readable``; the read after it (one
    ``os.read``) returns at once, so cancelling a wait loses nothing.  The lines
    already there when :meth:`mark_ahead` is called (at the start of a turn) are
    *written ahead*; lines arriving after are *fresh*.  :meth:`readline` takes
    lines in order; :meth:`take_fresh` takes the oldest fresh line, past those
    written ahead, which keep waiting.
    """

    fd: int
    # A terminal echoes what is typed; input from a pipe is echoed by the chat, for a readable transcript.
    echo: bool = attrs.field(default=attrs.Factory(lambda self: not os.isatty(self.fd), takes_self=True))
    _lines: deque[str] = attrs.field(factory=deque)
    _partial: bytes = b""
    _eof: bool = False
    # How many of the first buffered lines were written ahead.
    _ahead: int = 0
    # False once the poller refused the descriptor (regular files, /dev/null): reads never block there.
    _pollable: bool = True

    @property
    def ended(self) -> bool:
        """End of input, every line taken."""
        return self._eof and not self._lines

    async def readline(self) -> str | None:
        """The next line without its newline; None at end of input."""
        await self.wait_line()
        return self.next_line()

    def next_line(self) -> str | None:
        """The next buffered line, written ahead or not; None when none is buffered."""
        if not self._lines:
            return None
        self._ahead = max(0, self._ahead - 1)
        return self._lines.popleft()

    def take_fresh(self) -> str | None:
        """The oldest buffered line that was not written ahead; None when there is none."""
        if len(self._lines) <= self._ahead:
            return None
        line = self._lines[self._ahead]
        del self._lines[self._ahead]
        return line

    def mark_ahead(self) -> None:
        """Read what input is there without waiting, and count every line so far as written ahead."""
        self._drain()
        self._ahead = len(self._lines) + (1 if self._partial else 0)

    async def wait_line(self, *, fresh: bool = False) -> None:
        """Until a line is buffered (a fresh one, with ``fresh``) or, without ``fresh``, the input ended.

        With ``fresh``, end of input (or a descriptor that cannot be polled) waits forever: lines
        written ahead, and the end of input after them, belong after the turn.
        """
        import trio

        while len(self._lines) <= (self._ahead if fresh else 0):
            if self._eof and not fresh:
                return
            if fresh and (self._eof or not self._pollable):
                await trio.sleep_forever()
            await self._fill()

    async def _fill(self) -> None:
        import trio

        if self._pollable:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except OSError:
                self._pollable = False
        self._read()

    def _drain(self) -> None:
        for _ in range(64):
            if self._eof:
                return
            if self._pollable:
                try:
                    ready, _, _ = select.select([self.fd], [], [], 0)
                except (OSError, ValueError):
                    return
                if not ready:
                    return
            if not self._read():
                return

    def _read(self) -> bool:
        """One read of what is there; False when nothing was (another reader took it)."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
            if self._partial:
                self._lines.append(_decode(self._partial))
                self._partial = b""
            return True
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self._lines.extend(map(_decode, complete))
        return True


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


@attrs.define(eq=False)
class Output:
    """Writes to the terminal, remembering whether the cursor is mid-line (after streamed tokens)."""

    stream: TextIO
    mid_line: bool = False

    def write(self, text: str) -> None:
        """Text as it is (a token, a prompt), flushed at once."""
        if text:
            self.stream.write(text)
            self.stream.flush()
            self.mid_line = not text.endswith("\n")

    def line(self, text: str) -> None:
        """A line of its own, starting a new line first if needed."""
        self.end_line()
        self.write(text + "\n")

    def end_line(self) -> None:
        if self.mid_line:
            self.write("\n")


@attrs.define(eq=False)
class Chat:
    """One chat on one session: an event printer task and the input loop, sharing this state."""

    client: Client
    out: Output
    lines: LineReader
    # The token holds the admin role: level-2 actions of others are asked about here.
    admin: bool = False
    session_id: str = ""
    state: str = ""
    # The id of the user_message whose turn is running (None: idle, input is read).
    turn: str | None = None
    turn_streamed: bool = False
    # Actions waiting for this user's answer, oldest first; the head's question is on screen.
    pending: deque[AgentAction] = attrs.field(factory=deque)
    names: dict[str, str] = attrs.field(factory=dict)
    reading: bool = False
    exit_code: int = 0
    _changed: trio.Event | None = None
    _seen_tool_list: bool = False
    _lost: bool = False

    async def run(self, agent: str, session_id: str | None) -> int:
        import trio
        from trio_websocket import ConnectionClosed

        from ..client import ClientClosed, ServerError

        try:
            if session_id:
                state = await self.client.resume_session(session_id, agent)
            else:
                state = await self.client.start_session(agent)
        except ServerError as exc:
            verb = "resume session " + session_id if session_id else "start agent " + repr(agent)
            print(f"sconnect chat: cannot {verb}: [{exc.code}] {exc.message}", file=sys.stderr)
            return 1
        except (ClientClosed, ConnectionClosed):
            closed = self.client.ws.closed
            text = _closed_text(closed.code if closed else None, closed.reason if closed else None, session_id or "")
            print(f"sconnect chat: {text}", file=sys.stderr)
            return 1
        self.session_id, self.state = state.session_id, str(state.state)
        if self.state in _BUSY_STATES:
            # Resumed while a turn runs (followed from another connection): wait for its answer.
            self.turn = ""
            self.lines.mark_ahead()
        self.out.line(
            f"session {self.session_id} (agent {state.agent}, {self.state}); "
            f"resume later with --session {self.session_id}"
        )
        self.out.line(HELP)
        if self.admin:
            self.out.line(ADMIN_NOTE)
        self._changed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._show_events, nursery.cancel_scope)
            await self._converse()
            nursery.cancel_scope.cancel()
        return self.exit_code

    # --- events from the server -------------------------------------------------------

    async def _show_events(self, scope: trio.CancelScope) -> None:
        from ..client import ClientClosed

        while True:
            try:
                event = await self.client.next_event()
            except ClientClosed:
                self._lost_connection()
                scope.cancel()
                return
            if self._show(event):
                scope.cancel()
                return
            self._notify()

    def _show(self, event: ServerFrame) -> bool:
        """Print one event and update the chat's state; True when the chat is over."""
        from ..protocol import (
            AgentAction,
            AgentResponse,
            AgentResult,
            AgentState,
            ErrorFrame,
            ResponseToken,
            ToolList,
        )

        mine = getattr(event, "session_id", None) == self.session_id
        match event:
            case ResponseToken() if mine:
                self.turn_streamed = True
                self.out.write(event.token)
            case AgentResponse() if mine:
                if not self.turn_streamed:
                    self.out.write(event.content)
                self._end_turn()
            case AgentAction():
                self._show_action(event, mine)
            case AgentResult() if mine:
                self._show_result(event)
            case AgentState() if mine:
                return self._show_state(str(event.state))
            case ErrorFrame():
                self.out.line(f"[error {event.code}] {event.message}")
                if self.turn is not None and event.reply_to == self.turn:
                    self._end_turn()
            case ToolList():
                # The first arrives with every connection; later ones follow a config reload.
                if self._seen_tool_list:
                    self.out.line("[tools] the server's tool list changed (/tools shows it)")
                self._seen_tool_list = True
        return False

    def _show_action(self, action: AgentAction, mine: bool) -> None:
        self.names[action.action_id] = action.name
        text = self._describe(action)
        approver = str(action.approver)
        if not action.requires_approval:
            self.out.line(text)
        elif (mine and approver == "user") or (not mine and approver == "admin"):
            # Level 1 of this session, or (this token being an admin's) level 2 of another user.
            self.pending.append(action)
            if len(self.pending) == 1:
                self._ask(action)
        elif approver == "admin":
            self.out.line(f"{text} — needs approval by an admin: waiting for one to answer")
        else:
            self.out.line(f"{text} — needs approval by {approver}")

    def _ask(self, action: AgentAction) -> None:
        self.out.end_line()
        self.out.write(f"{self._describe(action)} — needs approval by {action.approver}: approve? [y/N] ")

    def _describe(self, action: AgentAction) -> str:
        text = f"[action] {action.name} {_compact(action.arguments)} level {action.level}"
        if action.session_id is None:
            text += " (a direct tool call of another user)"
        elif action.session_id != self.session_id:
            text += f" (session {action.session_id} of another user)"
        return text

    def _show_result(self, result: Any) -> None:
        name = self.names.pop(result.action_id, "action")
        status = str(result.status)
        text = f"[result] {name} {status}"
        if status != "ok":
            text += f": {_error_text(result.output)}"
        self.out.line(text)
        for action in list(self.pending):
            if action.action_id == result.action_id:
                # Answered elsewhere or timed out: the question is moot.
                was_head = action is self.pending[0]
                self.pending.remove(action)
                if was_head and self.pending:
                    self._ask(self.pending[0])
        if self.reading and not self.pending and self.turn is None:
            self.out.write("> ")

    def _show_state(self, state: str) -> bool:
        previous, self.state = self.state, state
        if state in _BUSY_STATES or (state == "active" and previous in _BUSY_STATES):
            return False
        self.out.line(f"[state] {state}")
        if state == "terminated":
            self.out.line("the session is over")
            return True
        return False

    def _end_turn(self) -> None:
        self.out.end_line()
        self.turn, self.turn_streamed = None, False
        if self.reading and not self.pending:
            self.out.write("> ")

    def _lost_connection(self) -> None:
        self.exit_code = 1
        if self._lost:
            return
        self._lost = True
        closed = self.client.ws.closed
        self.out.end_line()
        text = _closed_text(closed.code if closed else None, closed.reason if closed else None, self.session_id)
        print(f"sconnect chat: {text}", file=sys.stderr)

    def _notify(self) -> None:
        import trio

        assert self._changed is not None
        self._changed.set()
        self._changed = trio.Event()

    # --- input from the user ----------------------------------------------------------

    async def _converse(self) -> None:
        from trio_websocket import ConnectionClosed

        from ..client import ClientClosed

        try:
            while True:
                if self.turn is None and not self.pending:
                    # Idle: the next line, in order.
                    self.out.write("> ")
                    self.reading = True
                    try:
                        line = await self.lines.readline()
                    finally:
                        self.reading = False
                else:
                    # A turn runs: take a fresh line (one written ahead waits for the end of the turn),
                    # or with an approval pending the next line; look again whenever the state changes.
                    line = await self._line_or_change(fresh=not self.pending)
                    if line is None:
                        if self.pending and self.lines.ended:
                            self.out.end_line()
                            return
                        continue
                if line is None:
                    self.out.end_line()
                    return
                if self.lines.echo:
                    if self.pending or self.turn is None:
                        self.out.write(line + "\n")  # after the prompt or the question
                    else:
                        self.out.line(line)
                self.out.mid_line = False  # the line's newline (echoed by a terminal, or by us) ended it
                text = line.strip()
                if text.startswith("/"):
                    if not await self._command(text):
                        return
                    if self.pending:
                        self._ask(self.pending[0])
                elif self.pending:
                    await self._answer(text)
                elif self.turn is not None:
                    self.out.line(BUSY)
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
        approved = answer in ("y", "yes")
        action = self.pending.popleft()
        await self.client.answer(action.action_id, approved)
        self.out.line("approved" if approved else "denied")
        if self.pending:
            self._ask(self.pending[0])

    async def _send(self, content: str) -> None:
        from ..protocol import UserMessage, new_id

        frame = UserMessage(id=new_id(), session_id=self.session_id, content=content)
        # The turn is marked before sending: the server's answer can arrive before send returns.
        self.turn, self.turn_streamed = frame.id, False
        # Lines already written (a pipe filled ahead) wait for the end of this turn; later ones act at once.
        self.lines.mark_ahead()
        await self.client.send(frame)

    async def _command(self, line: str) -> bool:
        """Run one slash command; False when the chat should end."""
        from ..client import ServerError

        command = line.split()[0].lower()
        try:
            if command in ("/quit", "/exit"):
                return False
            if command in ("/pause", "/resume", "/stop"):
                state = await self.client.control(self.session_id, command[1:])
                self.state = str(state.state)
                self.out.line(f"[state] {self.state}")
                if self.state == "terminated":
                    self.out.line("the session is over")
                    return False
            elif command == "/tools":
                self._print_tools((await self.client.list_tools()).tools)
            elif command == "/help":
                self.out.line(HELP)
            else:
                self.out.line(f"unknown command {command}; {HELP}")
        except ServerError as exc:
            self.out.line(f"[error {exc.code}] {exc.message}")
        return True

    def _print_tools(self, tools: Any) -> None:
        # The server lists the tools this caller may call; it does not say which of them the agent uses.
        if not tools:
            self.out.line("no tools are available to you to call directly")
            return
        self.out.line("tools you may call directly (tool_call):")
        width = max(len(tool.name) for tool in tools)
        for tool in sorted(tools, key=lambda t: t.name):
            self.out.line(f"  {tool.name:<{width}}  level {tool.level}  {tool.description}")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _error_text(output: Any) -> str:
    if isinstance(output, dict):
        text = str(output.get("error", "") or _compact(output))
        problems = output.get("problems")
        if isinstance(problems, list) and problems:
            text += " (" + "; ".join(map(str, problems)) + ")"
        return text
    return _compact(output)
