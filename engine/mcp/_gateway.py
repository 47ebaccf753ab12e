"""The MCP front door's handlers: our tools and resources, per caller, through the shared action path.

Every ``tools/call`` and ``resources/read`` is a :func:`engine.server.actions.perform`
/ :func:`~engine.server.actions.read` for an :class:`McpRequester`: the same schema
check, policy decision, approval, sandbox and audit as a WebSocket ``tool_call``.
This module only translates.

What a caller sees: ``tools/list`` holds the tools policy lets this caller call,
below level 3; anything else is answered as an unknown tool (and audited as a
refused decision).  Approvals: a level-1 action is put to the caller in-band
(elicitation on a 2025-11-25 session; on the stateless 2026-07-28 revision, an
``input_required`` result carrying the same form, answered by the client's retry)
when its client can answer, else it waits like a level-2 one, which
only an admin answers (on the WebSocket side, where it shows in ``action_list``
like any pending action).  While an action waits, the request is held open with
progress notifications up to ``mcp_approval_wait_s``; past it the client gets a
"call again" result and a retry with the same arguments attaches to the same
action (:mod:`engine.mcp._held`).

Cancellation: cancelling the request (``notifications/cancelled``, or the client
leaving) cancels the action: its sandbox is killed, its pending approval closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, cast

import attrs
import mcp_types as types
import trio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server

from .. import tracing
from ..auth import Principal
from ..canonical import canonical_json
from ..decision import decide
from ..protocol import AgentAction, OfferedTool, ProtocolError, ServerFrame
from ..server.actions import Caller, Outcome, Snapshot, perform, read, refuse_hidden
from ..server.hub import Hub
from . import _convert as convert
from ._departure import Departure
from ._held import HeldCall, HeldCalls, StillWaiting, describe

log = logging.getLogger(__name__)

# Where the HTTP layer leaves the authenticated principal in the ASGI scope.
PRINCIPAL_SCOPE_KEY = "sconnect.principal"
# ... and the Departure noting when the client of that request goes away.
DISCONNECTED_SCOPE_KEY = "sconnect.disconnected"
# ... and, for the SDK's hooks that are not handed the request (the Mcp-Param header check),
# the same principal for the request being served in this task.
CALLER: ContextVar[Principal | None] = ContextVar("sconnect_mcp_caller", default=None)
KEEPALIVE_S = 10.0
_MAX_LISTINGS = 4096
# The key of our approval form among an input_required result's input requests.
APPROVAL_INPUT = "sconnect_approval"


@attrs.define(eq=False)
class McpRequester:
    """One MCP request's side of an action: who asks, and what its action events say."""

    hub: Hub
    principal: Principal
    audit_context: Mapping[str, Any]
    call: HeldCall[Outcome] | None = None
    client_tools: Mapping[str, OfferedTool] = attrs.field(factory=dict)
    client_results: dict[str, trio.MemorySendChannel[Any]] = attrs.field(factory=dict)

    @property
    def slot_key(self) -> str:
        # Direct MCP calls count against their subject's limit of tool runs at once.
        return f"mcp:{self.principal.sub}"

    def send(self, frame: ServerFrame) -> None:
        """Follow the action: its id, and whether it now waits for somebody's approval."""
        if self.call is None or not isinstance(frame, AgentAction):
            return
        self.call.action_id = frame.action_id
        if frame.requires_approval:
            self.call.ask_approval(str(frame.approver))


@attrs.frozen
class WhenTracing:
    """A server middleware that runs only while tracing is on (else the request goes straight on).

    Wraps the SDK's OpenTelemetry middleware: without a configured OpenTelemetry SDK its
    span records nothing, yet building it costs every request ~12 µs.
    """

    inner: Any

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        if tracing.enabled():
            return cast(HandlerResult, await self.inner(ctx, call_next))
        return await call_next(ctx)


@attrs.frozen
class _Listing:
    """One caller's tools/list, and the names in it: the tools this caller may call over MCP."""

    result: types.ListToolsResult
    names: frozenset[str]
    # name -> its inputSchema as tools/list sends it
    schemas: Mapping[str, Any]


@attrs.define(eq=False)
class Gateway:
    """The handlers of one MCP listener over the hub (one engine, one audit chain)."""

    hub: Hub
    held: HeldCalls[Outcome]
    transport: str = "mcp-http"
    # tools/list per caller, for the configuration in force (the 2026-07-28 transport also
    # lists before every tools/call to check Mcp-Param headers): (sub, roles) -> listing.
    _listings: dict[tuple[str, frozenset[str]], _Listing] = attrs.field(factory=dict)
    _listed_config: Any = None

    def server(self) -> Server[Any]:
        from mcp.server._otel import OpenTelemetryMiddleware
        from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

        server: Server[Any] = Server(
            "scalytics-connect",
            version=_version(),
            instructions="Tools and resources of Scalytics Connect: every call is decided by policy, "
            "may wait for an approval, runs in a sandbox and is audited.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            get_tool_input_schema=self.input_schema,
        )
        # The SDK's span per request is a no-op unless an OpenTelemetry SDK is configured
        # (engine/tracing.py decides that for our own spans too): skip it until then.
        server.middleware[:] = [WhenTracing(m) if isinstance(m, OpenTelemetryMiddleware) else m
                                for m in server.middleware]
        # The input_required round trip's state is sealed, bound to the subject, and expires.
        security = RequestStateSecurity(
            keys=[os.urandom(32)], ttl=max(60.0, self.hub.settings.approval_timeout_s),
            bind_principal=lambda ctx: principal_of(ctx).sub,
        )
        server.middleware.append(RequestStateBoundary(security, default_audience="scalytics-connect"))
        return server

    # --- tools --------------------------------------------------------------------------

    def _visible(self, snap: Snapshot, principal: Principal, name: str) -> bool:
        tool = snap.config.tools.get(name)
        return (
            tool is not None
            and tool.permission_level < 3
            and decide(snap.config, principal.sub, principal.roles, "tool.call", name).effect != "deny"
        )

    def _listing(self, snap: Snapshot, principal: Principal) -> _Listing:
        """What this caller sees, for the configuration in force (decided once per caller and configuration)."""
        if self._listed_config is not snap.config or len(self._listings) >= _MAX_LISTINGS:
            self._listings, self._listed_config = {}, snap.config
        key = (principal.sub, principal.roles)
        listing = self._listings.get(key)
        if listing is None:
            tools = [
                convert.tool_entry(tool.name, tool.description, tool.parameters)
                for tool in sorted(snap.config.tools.values(), key=lambda t: t.name)
                if self._visible(snap, principal, tool.name)
            ]
            listing = self._listings[key] = _Listing(
                types.ListToolsResult(tools=tools), frozenset(tool.name for tool in tools),
                {tool.name: tool.model_dump(by_alias=True, mode="json", exclude_none=True).get("inputSchema")
                 for tool in tools},
            )
        return listing

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """The input schema of tool ``name`` in this request's caller's tools/list; None when it is not in it.

        The SDK's 2026-07-28 transport checks a ``tools/call``'s ``Mcp-Param-*`` headers
        against it before dispatch.  Without this lookup it finds the schema by running a
        whole ``tools/list`` through the server for every ``tools/call``; the answer is the
        same (this caller's listing, so a hidden tool has no schema), from the cached listing.
        """
        principal = CALLER.get()
        if principal is None:
            raise RuntimeError("an MCP request reached the Mcp-Param header check without an authenticated principal")
        return self._listing(Snapshot.of(self.hub), principal).schemas.get(name)

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        # A copy: the SDK may fill in fields of the result it is handed.
        return self._listing(Snapshot.of(self.hub), principal_of(ctx)).result.model_copy()

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        principal = principal_of(ctx)
        with tracing.continued(_headers(ctx)), tracing.span("sconnect.mcp.request", **{
                "mcp.method": "tools/call", "tool": params.name, "subject": principal.sub}):
            return await self._call_tool(ctx, params, principal)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, principal: Principal
    ) -> types.CallToolResult | types.InputRequiredResult:
        snap = Snapshot.of(self.hub)
        name, arguments = params.name, params.arguments if params.arguments is not None else {}
        context = self._audit_context(ctx)
        if name not in self._listing(snap, principal).names:
            requester = McpRequester(self.hub, principal, context)
            await refuse_hidden(Caller(requester, snapshot=snap), name, arguments)
            raise convert.unknown_tool(name)
        key = (principal.sub, name, canonical_json(arguments))
        # The stateless revision asks by input_required round trips; this request may carry the answer.
        round_trip = not ctx.session.can_send_request and declares_elicitation(ctx)
        answered = round_trip and self._take_answer(principal, key, params)

        async def work(call: HeldCall[Outcome]) -> Outcome:
            requester = McpRequester(self.hub, principal, context, call)
            caller = Caller(requester, approval_timeout_s=self.hub.settings.approval_timeout_s, snapshot=snap)
            try:
                with self.hub.call_in_flight():
                    return await perform(caller, name, arguments)
            finally:
                _release_slots(self.hub, requester.slot_key)

        async def keepalive(call: HeldCall[Outcome], beat: int) -> None:
            waiting = describe(StillWaiting(call.action_id, call.phase, call.approver))
            await ctx.session.report_progress(beat, None, waiting)

        async def ask_in_band(call: HeldCall[Outcome]) -> bool:
            await call.approval_requested.wait()
            if call.approver != "user":
                return False
            if can_elicit(ctx):
                await self._elicit_approval(ctx, principal, call, name, arguments)
                return False
            # Stop waiting and answer input_required, unless this request brought the answer already.
            if round_trip and not answered and call.action_id in self.hub.approvals.pending:
                release.set()
                return True
            return False

        release = trio.Event()

        # The client leaving without cancelling is the same as cancelling.
        with trio.CancelScope() as leaving, departure_of(ctx).cancels(leaving):
            outcome = await self.held.run(key, work, keepalive=keepalive, alongside=ask_in_band)
        if leaving.cancelled_caught:
            # Nobody reads this: the action was cancelled (and audited) because the client left.
            return convert.call_result("cancelled", {"error": "the client went away"})
        if isinstance(outcome, StillWaiting):
            if release.is_set() and outcome.action_id is not None:
                return self._input_required(outcome.action_id, name, arguments)
            return convert.pending_result(outcome)
        if outcome.refusal == "invalid_arguments":
            raise convert.invalid_arguments(name, list(outcome.output.get("problems", [])))
        if outcome.refusal == "unknown_tool":
            raise convert.unknown_tool(name)
        return convert.call_result(str(outcome.status), outcome.output, outcome.reason, outcome.content)

    def _input_required(self, action_id: str, name: str, arguments: Any) -> types.InputRequiredResult:
        """Ask for the approval in the result; the client retries the call with the answer."""
        message, schema = convert.approval_form(action_id, name, arguments, 1, remember=True)
        form = types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))
        return types.InputRequiredResult(input_requests={APPROVAL_INPUT: form}, request_state=action_id)

    def _take_answer(self, principal: Principal, key: Any, params: types.CallToolRequestParams) -> bool:
        """Give the approval a retry carries to the action it was asked for; whether it carried one.

        The answer counts only for the same subject's detached call with the same tool and
        arguments whose pending action is the one named in the (sealed) request state.
        """
        answer = (params.input_responses or {}).get(APPROVAL_INPUT)
        if not isinstance(answer, types.ElicitResult):
            return False
        call = self.held.attachable(key)
        if call is None or call.action_id is None or call.action_id != params.request_state:
            return False
        if answer.action == "accept" and isinstance(answer.content, Mapping):
            approved = answer.content.get("approve") is True
        elif answer.action == "decline":
            approved = False
        else:
            return True  # dismissed: it waits for an answer elsewhere, without asking again
        self._answer_in_band(principal, call.action_id, approved, answer.content)
        return True

    def _answer_in_band(self, principal: Principal, action_id: str, approved: bool, content: Any) -> None:
        """An elicitation's answer, remembered when the form says so and the policy allows it;
        a remember the policy refuses still approves this one call (the form's first wish)."""
        remember = convert.remember_choice(content) if approved else None
        try:
            self.hub.approvals.answer(action_id, approved, principal.sub, principal.roles,
                                      "answered in the MCP client", reply_to="", remember=remember)
            return
        except ProtocolError as exc:
            if remember is None:
                log.info("in-band answer to %s refused: %s", action_id, exc)
                return
            log.info("in-band answer to %s: not remembered (%s); approving this call only", action_id, exc)
        try:
            self.hub.approvals.answer(action_id, approved, principal.sub, principal.roles,
                                      "answered in the MCP client", reply_to="")
        except ProtocolError as exc:
            log.info("in-band answer to %s refused: %s", action_id, exc)

    async def _elicit_approval(
        self, ctx: ServerRequestContext[Any], principal: Principal, call: HeldCall[Outcome], name: str, arguments: Any
    ) -> None:
        """Ask the caller to approve their own level-1 action; no clear answer leaves it waiting."""
        assert call.action_id is not None
        pending = self.hub.approvals.pending.get(call.action_id)
        level = pending.frame.level if pending is not None else 1
        message, schema = convert.approval_form(call.action_id, name, arguments, level, remember=True)
        try:
            answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        except Exception as exc:
            log.info("in-band approval of %s not possible (%s): it waits for an answer elsewhere", call.action_id, exc)
            return
        if answer.action == "accept" and isinstance(answer.content, Mapping):
            approved = answer.content.get("approve") is True
        elif answer.action == "decline":
            approved = False
        else:
            return
        self._answer_in_band(principal, call.action_id, approved, answer.content)

    # --- resources ----------------------------------------------------------------------

    def _readable(self, snap: Snapshot, principal: Principal) -> list[Any]:
        return [
            template
            for template in snap.resources.templates()
            if decide(
                snap.config, principal.sub, principal.roles, "resource.read",
                template.uri_template.replace("{", "").replace("}", ""),
            ).effect != "deny"
        ]

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        # Only the fixed URIs: everything with a placeholder is a template.
        readable = self._readable(Snapshot.of(self.hub), principal_of(ctx))
        return types.ListResourcesResult(
            resources=[
                convert.resource_entry(t.uri_template, t.description) for t in readable if "{" not in t.uri_template
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        readable = self._readable(Snapshot.of(self.hub), principal_of(ctx))
        return types.ListResourceTemplatesResult(
            resource_templates=[
                convert.template_entry(t.uri_template, t.description) for t in readable if "{" in t.uri_template
            ]
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        principal = principal_of(ctx)
        # Our own URI parser is the authority (the SDK's template matcher accepts '..').
        uri = str(params.uri)
        requester = McpRequester(self.hub, principal, self._audit_context(ctx))
        caller = Caller(requester, approval_timeout_s=self.hub.settings.approval_timeout_s)
        with self.hub.call_in_flight(), tracing.continued(_headers(ctx)), tracing.span(
                "sconnect.mcp.request", **{"mcp.method": "resources/read", "subject": principal.sub}):
            outcome, content = await read(caller, uri)
        if content is None:
            output = outcome.output if isinstance(outcome.output, Mapping) else {}
            fallback = {"denied": "forbidden", "timeout": "timeout"}.get(str(outcome.status), "internal")
            code = str(output.get("code") or fallback)
            raise convert.resource_error(uri, code, outcome.reason or str(outcome.status))
        return convert.resource_contents(content.uri, content.mime_type, content.data)

    # --- context ------------------------------------------------------------------------

    def _audit_context(self, ctx: ServerRequestContext[Any]) -> dict[str, Any]:
        context: dict[str, Any] = {"transport": self.transport, "mcp_request_id": ctx.request_id}
        client = client_name(ctx)
        if client is not None:
            context["mcp_client"] = client
        return context


def _headers(ctx: ServerRequestContext[Any]) -> list[tuple[bytes, bytes]]:
    """The HTTP request's headers (a traceparent among them continues the caller's trace)."""
    request = ctx.request
    return list(request.scope.get("headers", [])) if request is not None else []


def principal_of(ctx: ServerRequestContext[Any]) -> Principal:
    """The principal the HTTP layer authenticated for this request (never absent: it refuses first)."""
    request = ctx.request
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        raise RuntimeError("an MCP request reached a handler without an authenticated principal")
    return principal


def client_name(ctx: ServerRequestContext[Any]) -> str | None:
    """The client's self-reported name: from ``initialize`` (2025) or the request's ``_meta`` (2026)."""
    params = ctx.session.client_params
    if params is not None and params.client_info is not None:
        return str(params.client_info.name)[:200]
    meta = ctx.params.get("_meta") if ctx.params is not None else None
    info = meta.get(types.CLIENT_INFO_META_KEY) if isinstance(meta, Mapping) else None
    name = info.get("name") if isinstance(info, Mapping) else None
    return str(name)[:200] if name is not None else None


def departure_of(ctx: ServerRequestContext[Any]) -> Departure:
    """Whether the HTTP client of this request has gone away (a fresh one, never set, where nobody can tell)."""
    request = ctx.request
    departure = request.scope.get(DISCONNECTED_SCOPE_KEY) if request is not None else None
    return departure if isinstance(departure, Departure) else Departure()


def declares_elicitation(ctx: ServerRequestContext[Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


def can_elicit(ctx: ServerRequestContext[Any]) -> bool:
    """Whether the server can send this client an elicitation request now (a back-channel)."""
    return ctx.session.can_send_request and declares_elicitation(ctx)


def _release_slots(hub: Hub, key: str) -> None:
    """Forget a subject's run limiter once nobody holds or waits for it (keys must not pile up)."""
    limiter = hub.run_slots.get(key)
    if limiter is not None and limiter.borrowed_tokens == 0 and limiter.statistics().tasks_waiting == 0:
        del hub.run_slots[key]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scalytics-connect")
    except PackageNotFoundError:
        return "0"
