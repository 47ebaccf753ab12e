"""The chat's slash commands: ``/stop``, ``/end``, ``/pause``, ``/resume``, ``/tools``,
``/call``, ``/read``, ``/pending``, ``/approve``, ``/deny``, ``/grants``, ``/revoke``, ``/help``, ``/quit``;
and ``/good``, ``/bad``, ``/memory`` (in :mod:`._learning`).

Bad input (JSON that does not parse or is not an object, a tool that does not
exist, a missing argument) is answered here with a usage line, nothing sent; what
the server refuses comes back as an ``error`` and is shown as such.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ...suggest import unknown_name
from ..grants import full_grant_id
from ._learning import LearningMixin
from ._output import shown
from ._render import compact, short
from ._state import BUSY, BUSY_CALL, HELP

if TYPE_CHECKING:
    from ...protocol import ActionList


class CommandsMixin(LearningMixin):
    """Running slash commands (a part of :class:`engine.cli.chat._chat.Chat`)."""

    # Fields all live on ChatState; a mixin adds behaviour only.
    __slots__ = ()

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
            elif command == "/grants":
                await self._grants(rest)
            elif command == "/revoke":
                await self._revoke(rest)
            elif command in ("/good", "/bad"):
                await self._rate(1 if command == "/good" else -1, rest)
            elif command == "/memory":
                await self._memory(rest)
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
        from ._remember import parse_approve

        verb = "/approve" if approved else "/deny"
        given, _, reason = rest.partition(" ")
        remember = None
        if approved:
            parsed = parse_approve(rest)
            if isinstance(parsed, str):
                self.out.line(parsed)
                return
            given, remember, reason = parsed[0], parsed[1], parsed[2] or ""
        if not given:
            self.out.line(f"usage: {verb} ID [reason] (/pending lists the ids; a unique prefix is enough)")
            return
        known = set(self.seen_actions) | {asked.action.action_id for asked in self.pending}
        matches = sorted(action_id for action_id in known if action_id.startswith(given))
        if not matches:
            # Not seen by this chat (another chat's /pending, an MCP client's call): the
            # server's list of what waits for this user names it.
            assert self.client is not None
            waiting = [action.action_id for action in (await self.client.list_actions()).actions]
            matches = sorted(action_id for action_id in waiting if action_id.startswith(given))
        if len(matches) > 1 and given not in matches:
            self.out.line(f"{len(matches)} actions start with {shown(given)!r}: "
                          f"{', '.join(map(shown, matches))}; give more of the id")
            return
        # An id unknown here is sent as typed: the server has the last word (not_found, forbidden, ...).
        action_id = matches[0] if len(matches) == 1 else given
        await self._send_answer(action_id, approved, reason.strip() or None, known=bool(matches), remember=remember)

    async def _grants(self, rest: str) -> None:
        if rest not in ("", "all"):
            self.out.line("usage: /grants [all] (all: also revoked, ended and expired ones)")
            return
        assert self.client is not None
        listing = await self.client.list_grants(all=rest == "all")
        self.out.frame(listing)
        if not listing.grants:
            self.out.line("no grants: approve with /approve ID --session or --for 1h (or answer s or 1h) to make one")
            return
        self.out.line(f"{len(listing.grants)} grant(s) (/revoke GRANT_ID ends one):")
        for grant in listing.grants:
            reach = "these arguments" if grant.match is None else "matching " + ", ".join(
                f"{name}={kind}" for name, kind in sorted(grant.match.items()))
            where = f"session {short(grant.session_id)}" if grant.session_id else "any session"
            left = f"{grant.expires_in_s:.0f}s left" if grant.status == "live" else grant.status
            self.out.line(f"  {grant.grant_id}  {shown(grant.name)} {compact(grant.arguments)} ({reach}) for "
                          f"{shown(grant.subject)}, {grant.scope} ({where}), made by {shown(grant.made_by)}, {left}")

    async def _revoke(self, rest: str) -> None:
        grant_id, _, reason = rest.partition(" ")
        if not grant_id:
            self.out.line("usage: /revoke GRANT_ID [reason] (/grants lists them)")
            return
        assert self.client is not None
        revoked = await self.client.revoke_grant(await full_grant_id(self.client, grant_id), reason.strip() or None)
        self.out.frame(revoked)
        self.out.note("revoked", f"revoked grant {revoked.grant.grant_id} ({shown(revoked.grant.name)})",
                      grant_id=revoked.grant.grant_id)

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
