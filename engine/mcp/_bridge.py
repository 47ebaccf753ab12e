"""``sconnect mcp stdio``: MCP on stdin/stdout, our WebSocket protocol to a running server.

A desktop client launches this process; it holds no policy, sandbox or audit of its
own.  Every request becomes a frame of our protocol to the server named by ``--url``
(``tool_list``, ``tool_call``, ``resource_list``, ``resource_request``), so the server
decides, asks, runs and audits exactly as for any WebSocket client: one engine, one
audit chain.  Each ``tools/call`` gets its own WebSocket connection, which carries the
``X-Sconnect-Via`` note (transport, MCP request id, client name) for the audit log and
makes cancelling simple: closing it makes the server kill the call's sandbox and close
its pending approval.

Approvals work as on the HTTP front door: a level-1 action is put to the caller by
elicitation when the client can answer, a level-2 one waits for an admin; the request
is held with progress keep-alives up to the budget, then answered "call again", and an
identical retry attaches (:mod:`engine.mcp._held`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs
import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from ..canonical import canonical_json
from ..client import Client, ServerError, open_client
from ..protocol import AgentAction, AgentResult, ErrorFrame, ToolCall, ToolList, new_id
from ..protocol import content as blocks
from . import _convert as convert
from ._gateway import can_elicit, client_name
from ._held import HeldCall, HeldCalls, StillWaiting, describe
from ._via import via_header

log = logging.getLogger(__name__)


@attrs.frozen
class Answer:
    """How a bridged call ended: the server's result, or the error frame that refused it."""

    status: str
    output: Any
    error_code: str | None = None
    message: str = ""
    content: tuple[Any, ...] | None = None


@attrs.define(eq=False)
class Bridge:
    url: str
    token: str
    # For listing and reading: one connection for the bridge's life.
    client: Client
    held: HeldCalls[Answer]

    def server(self) -> Server[Any]:
        return Server(
            "scalytics-connect",
            instructions="Tools and resources of a Scalytics Connect server (policy, approvals, sandbox, audit).",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
        )

    async def _tools(self) -> ToolList:
        return await self.client.list_tools()

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        listed = await self._tools()
        return types.ListToolsResult(tools=[
            convert.tool_entry(t.name, t.description, t.parameters) for t in listed.tools if (t.level or 0) < 3
        ])

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments if params.arguments is not None else {}
        listed = {t.name: t for t in (await self._tools()).tools}
        if name in listed and (listed[name].level or 0) >= 3:
            # Listed by the server (a policy names this caller) but never offered over MCP.
            raise convert.unknown_tool(name)
        header = via_header(ctx.request_id, client_name(ctx))
        answering: dict[str, Client] = {}

        async def work(call: HeldCall[Answer]) -> Answer:
            async with open_client(self.url, self.token, extra_headers=[header]) as conn:
                answering["conn"] = conn
                frame_id = await conn.send(ToolCall(id=new_id(), name=name, arguments=arguments))
                async for event in conn.events():
                    if getattr(event, "reply_to", None) != frame_id:
                        continue
                    if isinstance(event, ErrorFrame):
                        return Answer("error", None, str(event.code), event.message)
                    if isinstance(event, AgentAction):
                        call.action_id = event.action_id
                        if event.requires_approval:
                            call.ask_approval(str(event.approver))
                    elif isinstance(event, AgentResult):
                        return _answer(event)
            return Answer("error", None, "unavailable", "the server closed the connection")

        async def keepalive(call: HeldCall[Answer], beat: int) -> None:
            waiting = StillWaiting(call.action_id, call.phase, call.approver)
            await ctx.session.report_progress(beat, None, describe(waiting))

        async def ask_in_band(call: HeldCall[Answer]) -> None:
            await call.approval_requested.wait()
            if call.approver != "user" or not can_elicit(ctx) or "conn" not in answering:
                return
            assert call.action_id is not None
            message, schema = convert.approval_form(call.action_id, name, arguments, 1)
            try:
                answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
            except Exception as exc:
                log.info("in-band approval not possible (%s): the action waits for an answer elsewhere", exc)
                return
            if answer.action == "accept" and isinstance(answer.content, Mapping):
                await answering["conn"].answer(call.action_id, answer.content.get("approve") is True,
                                               "answered in the MCP client")
            elif answer.action == "decline":
                await answering["conn"].answer(call.action_id, False, "declined in the MCP client")

        key = ("", name, canonical_json(arguments))
        outcome = await self.held.run(key, work, keepalive=keepalive, alongside=ask_in_band)
        if isinstance(outcome, StillWaiting):
            return convert.pending_result(outcome)
        if outcome.error_code is not None:
            if outcome.error_code == "not_found":
                raise convert.unknown_tool(name)
            raise MCPError(types.INTERNAL_ERROR, f"{outcome.error_code}: {outcome.message}")
        output = outcome.output
        if isinstance(output, Mapping) and output.get("error") == "invalid arguments" and "problems" in output:
            raise convert.invalid_arguments(name, list(output["problems"]))
        if outcome.status == "denied" and name not in listed:
            raise convert.unknown_tool(name)
        reason = str(output.get("error", "")) if isinstance(output, Mapping) and outcome.status != "ok" else ""
        return convert.call_result(outcome.status, output, reason, outcome.content)

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        listed = await self._resource_list()
        return types.ListResourcesResult(
            resources=[
                convert.resource_entry(r.uri_template, r.description) for r in listed if "{" not in r.uri_template
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        listed = await self._resource_list()
        return types.ListResourceTemplatesResult(
            resource_templates=[
                convert.template_entry(r.uri_template, r.description) for r in listed if "{" in r.uri_template
            ]
        )

    async def _resource_list(self) -> list[Any]:
        from ..protocol import ResourceList, ResourceListRequest

        reply = await self.client.request(ResourceListRequest(id=new_id()))
        assert isinstance(reply, ResourceList)
        return list(reply.resources)

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            response = await self.client.read_resource(uri)
        except ServerError as exc:
            raise convert.resource_error(uri, str(exc.frame.code), exc.frame.message) from None
        data: str | bytes
        if response.content_base64 is not None:
            import base64

            data = base64.b64decode(response.content_base64)
        else:
            data = response.content or ""
        return convert.resource_contents(response.uri, response.mime_type, data)


def _answer(result: AgentResult) -> Answer:
    """The server's result; its content blocks checked again (the bridge passes on nothing unchecked)."""
    if result.content is None:
        return Answer(str(result.status), result.output)
    try:
        content = blocks.check_blocks(result.content)
    except blocks.ContentError as exc:
        return Answer("error", {"error": str(exc)})
    return Answer(str(result.status), result.output, content=content)


# One JSON-RPC message per line; a longer line is a client error, not a reason to grow without bound.
MAX_LINE_BYTES = 16 * 2**20


class _Lines:
    """stdin as lines, read by Trio itself (cancellable, unlike a worker thread blocked in read())."""

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise BridgeClosed(f"a line on stdin is longer than {MAX_LINE_BYTES} bytes")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if not self._buffer:
                    raise StopAsyncIteration
                end = len(self._buffer)
                self._buffer.extend(b"\n")
                break
            self._buffer.extend(chunk)
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line.decode("utf-8", "replace")


class _Out:
    """stdout for the SDK's stdio transport, written by Trio."""

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self._stream = stream

    async def write(self, text: str) -> None:
        await self._stream.send_all(text.encode("utf-8"))

    async def flush(self) -> None:
        pass


class BridgeClosed(Exception):
    """The server closed the bridge's connection (token expired, server stopping, ...)."""


async def _follow(client: Client, closed: list[str]) -> None:
    """Read the shared connection's unsolicited frames (not needed here) until it closes."""
    async for _frame in client.events():
        pass
    code = client.ws.closed.code if client.ws.closed is not None else None
    reason = client.ws.closed.reason if client.ws.closed is not None else None
    closed.append(f"the server closed the connection ({code}{': ' + reason if reason else ''})")


async def run_bridge(url: str, token: str, *, budget_s: float = 50.0) -> None:
    """Serve MCP on stdin/stdout until stdin closes; raises what connecting to ``url`` raises.

    Raises :class:`BridgeClosed` when the server closes the connection (a token that
    expired, a server that stops): the client then sees the bridge go, not a string of
    failing calls.
    """
    from mcp.server.stdio import stdio_server

    closed: list[str] = []
    async with open_client(url, token) as client, trio.open_nursery() as nursery:
        held: HeldCalls[Answer] = HeldCalls(nursery, budget_s=budget_s, keepalive_s=min(10.0, budget_s / 4))
        server = Bridge(url, token, client, held).server()

        async def follow() -> None:
            await _follow(client, closed)
            nursery.cancel_scope.cancel()

        nursery.start_soon(follow)
        stdin, stdout = trio.lowlevel.FdStream(os.dup(0)), trio.lowlevel.FdStream(os.dup(1))
        async with stdin, stdout, stdio_server(_Lines(stdin), _Out(stdout)) as (read, write):  # type: ignore[arg-type]
            await server.run(read, write, server.create_initialization_options())
        nursery.cancel_scope.cancel()
    if closed:
        raise BridgeClosed(closed[0])
