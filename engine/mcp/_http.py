"""MCP over Streamable HTTP: the listener, its authentication gate, and the SDK's transport.

``serve_mcp`` runs hypercorn's Trio worker inside the caller's nursery
(``nursery.start``): started means listening, and it reports its URL.  In front of
the SDK's app sits :class:`AuthGate`, an ASGI middleware that lets through only
requests to ``/mcp`` carrying ``Authorization: Bearer <jwt>`` that
:func:`engine.auth.verify` accepts (the WebSocket handshake's check), else answers
401 with a JSON reason and audits the failure.  A token verified once is remembered
(by its SHA-256) until it expires, so a client's every request does not pay for its
signature again (:class:`VerifiedTokens`).  A 2025-11-25 session (``Mcp-Session-Id``)
belongs to the subject that opened it: another token presenting its id is refused.
The SDK checks Host and Origin (DNS rebinding), Content-Type, body size and JSON-RPC.
A request the gate lets through goes straight to the SDK's session manager: the
Starlette app around it only routes ``/mcp`` (the gate has done that) and turns an
exception into a 500, which :func:`answering_errors` does the same way; the app
itself serves the lifespan, which runs the session manager.
A streamed answer that is nothing but the response goes out as JSON (:mod:`._oneshot`):
the client's connection then carries its next request.

TLS: with the server's certificate configured (``wss://``), MCP is served as ``https://``.

Graceful stop: ``shutdown`` (a ``trio.Event``) set makes hypercorn stop accepting
and gives open requests ``grace_s`` to finish before they are cancelled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from functools import partial
from typing import Any

import attrs
import trio

from ..audit import AuditEvent
from ..auth import AuthError, AuthSettings, Principal, token_from_request, verify
from ..server.hub import Hub
from ._departure import Departure
from ._gateway import CALLER, DISCONNECTED_SCOPE_KEY, PRINCIPAL_SCOPE_KEY, Gateway
from ._held import HeldCalls
from ._loopback import is_loopback
from ._oneshot import json_when_whole

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# Sessions remembered for the subject check; the SDK's own limit on sessions is lower.
_MAX_SESSIONS = 10_000
# Verified tokens remembered; a client sends the same token with each request.
_MAX_TOKENS = 1024

Scope = dict[str, Any]


@attrs.define(eq=False)
class VerifiedTokens:
    """Tokens :func:`engine.auth.verify` accepted, with their principal, until they expire.

    Keyed by the token's SHA-256 (a lookup compares digests, never the secret itself),
    for the auth settings they were verified under: other settings (a reload) forget
    them all.  A remembered token is accepted again only while :func:`verify` would
    still accept it: its signature, audience and issuer do not change, and time only
    ever makes ``nbf``/``iat`` more valid, so what is left is ``exp`` (with the same
    leeway).  An expired one is verified again, which refuses it.  Refusals are never
    remembered: each is audited.
    """

    max_entries: int = _MAX_TOKENS
    _settings: AuthSettings | None = None
    _entries: OrderedDict[bytes, Principal] = attrs.field(factory=OrderedDict)

    def verify(self, token: str | None, settings: AuthSettings) -> Principal:
        if settings is not self._settings:
            self._entries.clear()
            self._settings = settings
        if not token:
            return verify(token, settings)
        digest = hashlib.sha256(token.encode()).digest()
        principal = self._entries.get(digest)
        if principal is not None:
            if principal.expires_at > time.time() - settings.leeway_s:
                return principal
            del self._entries[digest]
        principal = verify(token, settings)
        self._entries[digest] = principal
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return principal


@attrs.define(eq=False)
class AuthGate:
    """ASGI middleware: only authenticated requests to ``/mcp`` reach the SDK."""

    app: Any
    hub: Hub
    anonymous_role: str | None = None
    # What serves an authenticated request to /mcp (the app itself unless told otherwise).
    mcp: Any = None
    # Mcp-Session-Id -> the subject that opened it.
    sessions: OrderedDict[str, str] = attrs.field(factory=OrderedDict)
    tokens: VerifiedTokens = attrs.field(factory=VerifiedTokens)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        if scope.get("path") != MCP_PATH:
            await _json(send, 404, {"code": "not_found", "message": f"the MCP endpoint is {MCP_PATH}"})
            return
        headers = scope.get("headers", [])
        try:
            # Header only: a token in a URL ends up in logs.
            token = token_from_request(MCP_PATH, headers)
            if token is None and self.anonymous_role is not None:
                principal = Principal(
                    sub="anonymous", roles=frozenset({self.anonymous_role}), expires_at=float("inf"), claims={}
                )
            else:
                principal = self.tokens.verify(token, self.hub.settings.auth)
        except AuthError as exc:
            await self._refuse(scope, send, exc)
            return
        session = _header(headers, b"mcp-session-id")
        # Fail closed: a session id we did not see opened (or have forgotten) is nobody's.
        if session is not None and self.sessions.get(session) != principal.sub:
            await _json(send, 404, {"code": "not_found", "message": "no such MCP session for this subject"})
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        departure = scope[DISCONNECTED_SCOPE_KEY] = Departure()
        if scope.get("method") == "POST":
            send = json_when_whole(send)
        if session is None:
            send = self._remembering(principal.sub, send)
        caller = CALLER.set(principal)
        try:
            await (self.mcp or self.app)(scope, _watching(receive, departure), send)
        finally:
            CALLER.reset(caller)

    def _remembering(self, sub: str, send: Any) -> Any:
        """Wrap ``send`` to note the subject of a session this response opens."""

        async def remember_session(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                opened = _header(message.get("headers", []), b"mcp-session-id")
                if opened is not None:
                    self.sessions[opened] = sub
                    while len(self.sessions) > _MAX_SESSIONS:
                        self.sessions.popitem(last=False)
            await send(message)

        return remember_session

    async def _refuse(self, scope: Scope, send: Any, exc: AuthError) -> None:
        peer = scope.get("client")
        where = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        log.warning("MCP authentication failed from %s: %s (%s)", where, exc.reason, exc)
        self.hub.metrics.auth_failures_total.inc(reason=str(exc.reason))
        await self.hub.audit.record(
            AuditEvent(
                kind="auth_failure", outcome=str(exc.reason),
                details={"peer": where, "path": MCP_PATH, "message": str(exc), "transport": "mcp-http"},
            )
        )
        await _json(
            send, 401, {"code": "unauthorized", "reason": str(exc.reason), "message": str(exc)},
            extra=[(b"www-authenticate", b'Bearer error="invalid_token"')],
        )


def _watching(receive: Any, departure: Departure) -> Any:
    """``receive`` for the app that also notes the client leaving while its response is open.

    Whoever reads the request after its body sees the ``http.disconnect``: while a
    2025-11-25 call's response streams, the SDK's SSE response keeps reading for it
    (the 2026-07-28 transport reads for it too, and cancels its handler itself).
    Noting it here cancels a held ``tools/call`` without a task of our own per request.
    """

    async def wrapped() -> dict[str, Any]:
        message: dict[str, Any] = await receive()
        if message.get("type") == "http.disconnect":
            departure.set()
        return message

    return wrapped


def answering_errors(app: Any) -> Any:
    """``app`` answering an exception it raises before its response started as Starlette's
    ``ServerErrorMiddleware`` does (500, ``Internal Server Error`` in plain text), then
    raising it on to the server, which logs it."""

    async def answering(scope: Scope, receive: Any, send: Any) -> None:
        started = False

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, receive, watched)
        except Exception:
            if not started:
                body = b"Internal Server Error"
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-length", str(len(body)).encode()), (b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": body})
            raise

    return answering


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _json(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def build_app(hub: Hub, held: HeldCalls[Any], host: str, anonymous_role: str | None) -> Any:
    """The SDK's Streamable HTTP app for our gateway, behind the authentication gate."""
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = {host, "127.0.0.1", "localhost", "[::1]"} if is_loopback(host) else {host}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{h}:*" for h in hosts),
        allowed_origins=sorted(f"{scheme}://{h}:*" for h in hosts for scheme in ("http", "https")),
    )
    server = Gateway(hub, held).server()
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, transport_security=security, host=host,
        max_request_body_size=hub.settings.max_frame_bytes,
    )
    # The Starlette app around the session manager only routes /mcp and answers errors (a
    # middleware stack and a router per request): the gate routes, answering_errors answers.
    return AuthGate(app, hub, anonymous_role, mcp=answering_errors(server.session_manager.handle_request))


async def serve_mcp(
    hub: Hub,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    anonymous_role: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve MCP until ``shutdown`` is set (then drain for the hub's grace period) or cancelled.

    ``task_status.started`` gets the endpoint's URL (port 0 resolved).  An anonymous
    role is refused on a listener that is not loopback (ValueError).
    """
    if anonymous_role is not None and not is_loopback(host):
        raise ValueError(f"an anonymous MCP role is allowed only on a loopback address, not {host}")
    import hypercorn.trio
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = hub.settings.shutdown_grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    if hub.settings.tls_cert is not None:
        # The WebSocket's certificate: tokens never cross the network in clear on either door.
        config.certfile, config.keyfile = str(hub.settings.tls_cert), str(hub.settings.tls_key)
    async with trio.open_nursery() as nursery:
        budget = hub.settings.mcp_approval_wait_s
        # Several keep-alives within the budget, at most every 10 s (proxies cut idle streams).
        held: HeldCalls[Any] = HeldCalls(nursery, budget_s=budget, keepalive_s=min(10.0, budget / 4),
                                         keep_s=hub.settings.approval_timeout_s)
        app = build_app(hub, held, host, anonymous_role)
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait))
        task_status.started(f"{binds[0]}{MCP_PATH}")
        # Calls detached from their request (waiting for an approval) count in hub.inflight:
        # the server's drain waits for them, then cancels this nursery with everything else.
        await trio.sleep_forever()
