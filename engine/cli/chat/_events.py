"""The chat's event printer: each server frame shown readably, and the state kept current.

Also the two ways the chat learns what waits for an answer besides events: the
requester of another user's action (and whether it still waits) from
``action_list``, asked now and then while such a question is on screen, and
after a reconnect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._output import shown, shown_body
from ._render import error_text, value_lines
from ._state import _BUSY_STATES, _GONE, FOREIGN_POLL_S, Asked, ChatState

if TYPE_CHECKING:
    from ...protocol import AgentAction, ServerFrame


class EventsMixin(ChatState):
    """Showing server frames (a part of :class:`engine.cli.chat._chat.Chat`)."""

    # Fields all live on ChatState; a mixin adds behaviour only.
    __slots__ = ()

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
                else:
                    self.last_turn = event.turn_id
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

    def _show_result(self, result: Any, request: tuple[str, str] | None) -> None:
        name = self.names.pop(result.action_id, request[1] if request else "action")
        status = str(result.status)
        text = self.out.paint(f"[result] {shown(name)} {status}", "green" if status == "ok" else "red")
        if status != "ok":
            text += f": {error_text(result.output)}"
        self.out.line(text)
        if status == "ok" and result.content:
            # MCP content blocks: their text, and one line per image, audio, resource or link.
            from ...protocol.content import describe, summary

            shown_lines = value_lines(summary(result.content)) if request is not None else [
                "  " + shown(describe(block)) for block in result.content if block.get("type") != "text"
            ]
            for line in shown_lines:
                self.out.line(line)
        elif request is not None and status == "ok":
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
        asked = self.remembering.pop(reply_to, None)
        if action_id is not None and str(error.code) in _GONE:
            self._drop_pending(action_id, None)
        elif asked is not None and all(a.action.action_id != action_id for a in self.pending):
            # The server refused what was to be remembered: the action still waits, ask again.
            self.pending.appendleft(asked)
            self._ask(asked)
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
