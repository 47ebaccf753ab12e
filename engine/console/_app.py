"""The console's ASGI application: static files, sign-in, read-only JSON, and the WebSocket.

Routes (all on the console's own listener, so the page and its WebSocket share one origin):

- ``GET /`` and ``GET /static/<file>``: the page, from the package (a fixed list of files).
- ``GET /api/csrf``: a pre-sign-in CSRF token, also set as a cookie (double submit).
- ``POST /api/signin`` (form: ``token`` or ``code``): verifies the token (or redeems a
  one-time code) once and sets the session cookie; ``POST /api/signout`` ends it.
- ``GET /api/me``, ``/api/agents``, ``/api/sessions``: who is signed in, what they may chat
  with, their earlier sessions.
- ``GET /api/audit`` and ``/api/audit/verify`` (roles ``admin`` or ``auditor``): the log and
  its verification, read in a worker thread.
- ``/ws``: the protocol, bridged to :class:`~engine.server.connection.Connection`; it
  ends at sign-out, here at once, on another instance within ``REVALIDATE_S``.

Security: every response carries a strict Content-Security-Policy (no inline script,
``connect-src 'self'``); a POST needs the CSRF token in ``X-CSRF-Token`` equal to its
cookie (before sign-in) or to the session's (after), and a same-origin ``Origin`` /
``Sec-Fetch-Site`` when the browser sends them; the WebSocket handshake needs the session
cookie and an ``Origin`` equal to the console's own. The ``Host`` header must name this
listener (DNS rebinding). No cookie: 401; a role that may not: 403.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs

import attrs
import trio

from ..audit import KINDS, AuditError, AuditEvent, verify_log
from ..auth import AuthError, Principal
from ..auth import verify as verify_token
from ..server.hub import Hub
from ..store import StoreError
from . import _policy
from ._bridge import AsgiWebSocket, Receive, Send
from ._signin import ConsoleSession, SignIns

log = logging.getLogger(__name__)
# status, body, content type, extra headers
Reply = tuple[int, bytes, str, list[tuple[bytes, bytes]]]

SESSION_COOKIE = "sconnect_console"
CSRF_COOKIE = "sconnect_console_csrf"
CSRF_HEADER = b"x-csrf-token"
MAX_BODY_BYTES = 64 * 1024
AUDIT_ROLES = frozenset({"admin", "auditor"})
AUDIT_MAX_ROWS = 1000
# Earlier sessions offered on the Chat page, most recent first.
SESSIONS_SHOWN = 100
# "Decided before" on the Approvals page: the latest approval records looked at, and kept.
DECIDED_SCAN = 2000
DECIDED_SHOWN = 50
# How often a page's WebSocket checks that its session still exists (signed out elsewhere).
REVALIDATE_S = 30.0
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package: ``name -> (bytes, content type)``."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define(eq=False)
class ConsoleApp:
    """The ASGI callable. ``hosts`` are the ``Host`` values that name this listener."""

    hub: Hub
    signins: SignIns
    hosts: frozenset[str]
    secure: bool
    # The console's WebSocket connections count against the same limits as the others.
    admit: Callable[[str], tuple[int, str] | None]
    leave: Callable[[str], None]
    static: dict[str, tuple[bytes, str]] = attrs.field(factory=load_static)
    # One verification at a time: it reads the whole log.
    _verifying: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    # The WebSocket connections of each session (cookie value), so that signing out ends them.
    _live: dict[str, set[tuple[trio.CancelScope, AsgiWebSocket]]] = attrs.field(factory=dict)

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = _headers(scope)
        if scope["type"] == "websocket":
            await self._websocket(scope, headers, receive, send)
            return
        try:
            if headers.get("host", "") not in self.hosts:
                raise HttpError(421, "this listener does not serve that host name")
            status, body, content_type, extra = await self._route(scope, headers, receive)
        except HttpError as exc:
            status, content_type, extra = exc.status, "application/json", []
            body = json.dumps({"message": exc.message}).encode()
        await _respond(send, status, body, content_type, extra)

    # --- HTTP ----------------------------------------------------------------------------

    async def _route(self, scope: Mapping[str, Any], headers: dict[str, str],
                     receive: Receive) -> Reply:
        method, path = scope["method"], scope["path"]
        if method == "GET" and path in ("/", "/index.html"):
            return self._file("index.html")
        if method == "GET" and path == "/favicon.ico":
            return 204, b"", "text/plain", []
        if method == "GET" and path.startswith("/static/"):
            return self._file(path.removeprefix("/static/"))
        if path == "/api/signin":
            _need(method, "POST")
            return await self._signin(headers, receive, _peer(scope))
        if path == "/api/signout":
            _need(method, "POST")
            session_id, session = await self._session(headers)
            self._check_post(headers, session.csrf)
            await self.signins.close(session_id)
            for scope_, ws in self._live.get(session_id, ()):
                ws.close_as(4001, "signed out")
                scope_.cancel()
            return _json({"signed_out": True}, [_cookie(SESSION_COOKIE, "", self.secure, max_age=0)])
        if path == "/api/csrf":
            _need(method, "GET")
            token = secrets.token_urlsafe(32)
            return _json({"csrf": token}, [_cookie(CSRF_COOKIE, token, self.secure, max_age=3600)])
        if not path.startswith("/api/"):
            raise HttpError(404, "no such page")
        _need(method, "GET")
        _same_origin_fetch(headers)
        _, session = await self._session(headers)
        principal = session.principal
        if path == "/api/me":
            return _json({"sub": principal.sub, "roles": sorted(principal.roles), "csrf": session.csrf,
                          "expires_at": session.expires_at})
        if path == "/api/agents":
            agents = self.hub.config.agents
            return _json({"agents": [{"name": a.name, "description": a.description} for a in agents.values()]})
        if path == "/api/sessions":
            records = sorted(await self.hub.store.sessions_of(principal.sub), key=lambda r: -r.updated_at)
            return _json({"sessions": [attrs.asdict(r) for r in records[:SESSIONS_SHOWN]]})
        if path == "/api/approvals/decided":
            if "admin" not in principal.roles:
                raise HttpError(403, "the approval queue is for admins")
            return _json({"decided": await self._decided_by(principal.sub)})
        if path.startswith("/api/policy/"):
            if not principal.roles & AUDIT_ROLES:
                raise HttpError(403, "the policy views are for the roles admin and auditor")
            return _json(await self._policy(path.removeprefix("/api/policy/"), _query_params(scope)))
        if path in ("/api/audit", "/api/audit/verify"):
            if not principal.roles & AUDIT_ROLES:
                raise HttpError(403, "the audit log is for the roles admin and auditor")
            if path == "/api/audit":
                return _json(await self._audit(_query_params(scope)))
            async with self._verifying:
                try:
                    report = await trio.to_thread.run_sync(verify_log, self.hub.audit)
                except AuditError as exc:
                    raise HttpError(404, str(exc)) from None
            return _json(report.to_dict())
        raise HttpError(404, "no such endpoint")

    def _file(self, name: str) -> Reply:
        found = self.static.get(name)
        if found is None:
            raise HttpError(404, "no such file")
        return 200, found[0], found[1], [(b"cache-control", b"no-cache")]

    async def _session(self, headers: Mapping[str, str]) -> tuple[str, ConsoleSession]:
        session_id = _cookies(headers).get(SESSION_COOKIE)
        session = await self._lookup(session_id)
        if session is None or session_id is None:
            raise HttpError(401, "not signed in (or the session has expired): sign in again")
        return session_id, session

    async def _lookup(self, session_id: str | None) -> ConsoleSession | None:
        try:
            return await self.signins.get(session_id)
        except StoreError as exc:
            log.error("console: cannot read sign-ins: %s", exc)
            raise HttpError(503, "the server cannot reach its database: try again shortly") from None

    def _check_post(self, headers: Mapping[str, str], expected: str | None) -> None:
        _same_origin_post(headers)
        given = headers.get(CSRF_HEADER.decode(), "")
        if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HttpError(403, "missing or wrong CSRF token: reload the page")

    async def _signin(self, headers: Mapping[str, str], receive: Receive, peer: str) -> Reply:
        self._check_post(headers, _cookies(headers).get(CSRF_COOKIE))
        form = parse_qs((await _body(receive)).decode("utf-8", "replace"))
        token, code = (form.get("token") or [""])[0].strip(), (form.get("code") or [""])[0].strip()
        principal: Principal | None
        if code:
            principal = self.signins.redeem(code)
            if principal is None:
                raise HttpError(401, "this sign-in link was used already or has expired: ask for a new one")
        elif token:
            try:
                principal = verify_token(token, self.hub.settings.auth)
            except AuthError as exc:
                self.hub.metrics.auth_failures_total.inc(reason=str(exc.reason))
                await self.hub.audit.record(AuditEvent(
                    kind="auth_failure", outcome=str(exc.reason),
                    details={"peer": peer, "path": "/api/signin", "message": str(exc)},
                ))
                raise HttpError(401, f"sign-in refused: {exc}") from None
        else:
            raise HttpError(400, "paste a token to sign in")
        try:
            session_id, session = await self.signins.open(principal)
        except StoreError as exc:
            log.error("console: cannot store a sign-in: %s", exc)
            raise HttpError(503, "the server cannot reach its database: try again shortly") from None
        log.info("console: %s signed in", principal.sub)
        # No Max-Age: the cookie lives for the browser session; the server enforces the expiry.
        return _json({"sub": principal.sub, "roles": sorted(principal.roles), "csrf": session.csrf},
                     [_cookie(SESSION_COOKIE, session_id, self.secure),
                      _cookie(CSRF_COOKIE, "", self.secure, max_age=0)])

    async def _audit(self, params: Mapping[str, str]) -> dict[str, Any]:
        filters: dict[str, Any] = {key: params[key] or None for key in ("subject", "kind", "tool", "outcome",
                                                                       "since", "until") if key in params}
        try:
            limit = min(AUDIT_MAX_ROWS, max(1, int(params.get("limit", "200"))))
        except ValueError:
            raise HttpError(400, "limit must be a number") from None
        try:
            # The server's own log: the state directory's, or the shared one in PostgreSQL.
            records = await self.hub.audit.query(limit=limit, **filters)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        except AuditError as exc:
            raise HttpError(404, str(exc)) from None
        return {"records": [r.to_dict() for r in records], "limit": limit, "kinds": sorted(KINDS)}

    async def _decided_by(self, sub: str) -> list[dict[str, Any]]:
        """The approvals this person gave or refused, most recent first (from the audit log)."""
        try:
            records = await self.hub.audit.query(kind="approval", limit=DECIDED_SCAN)
        except AuditError as exc:
            raise HttpError(404, str(exc)) from None
        mine = [r.to_dict() for r in reversed(records) if r.approver == sub]
        return mine[:DECIDED_SHOWN]

    async def _policy(self, question: str, params: Mapping[str, str]) -> dict[str, Any]:
        config = self.hub.config  # one snapshot: a reload swaps the hub's, never this one
        target = params.get("target", "").strip()
        answer: Callable[[], dict[str, Any]]
        if question == "matrix":
            answer = partial(_policy.matrix_json, config)
        elif question in ("explain", "who-can") and not target:
            raise HttpError(400, "name a tool or a resource URI")
        elif question == "explain":
            roles = frozenset(r.strip() for r in params.get("roles", "").split(",") if r.strip())
            sub = params.get("subject", "").strip() or None
            answer = partial(_policy.explain_json, config, sub, roles, target, params.get("arguments"))
        elif question == "who-can":
            answer = partial(_policy.who_can_json, config, target)
        else:
            raise HttpError(404, "no such policy question")
        try:
            # Matching every rule against every subject is CPU work: off the event loop.
            result = await trio.to_thread.run_sync(answer)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        hub = self.hub
        return {**result, "policy_revision": hub.policy_revision, "config_loaded_at": hub.config_loaded_at,
                "reload_refused_at": hub.reload_refused_at, "reload_errors": list(hub.reload_errors)}

    # --- WebSocket ---------------------------------------------------------------------------

    async def _websocket(self, scope: Mapping[str, Any], headers: dict[str, str], receive: Receive,
                         send: Send) -> None:
        """The protocol for a signed-in page: same origin, the session cookie, the usual limits."""
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        host = headers.get("host", "")
        origin = headers.get("origin")
        expected = f"{'https' if self.secure else 'http'}://{host}"
        session_id = _cookies(headers).get(SESSION_COOKIE)
        try:
            session = await self.signins.get(session_id)
        except StoreError as exc:
            log.error("console: cannot read sign-ins: %s", exc)
            session = None
        refusal = None
        if scope["path"] != "/ws":
            refusal = "the console's WebSocket is /ws"
        elif host not in self.hosts or origin != expected:
            refusal = f"origin {origin!r} may not use the console's WebSocket"
        elif session is None:
            refusal = "not signed in"
        else:
            admitted = self.admit(session.principal.sub)
            if admitted is not None:
                refusal = admitted[1]
        if refusal is not None or session is None or session_id is None:
            log.warning("console WebSocket refused: %s", refusal)
            # Closing before accepting: hypercorn answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        sub = session.principal.sub
        # Signing out ends this page's connection too: the scope is cancelled by /api/signout.
        live = self._live.setdefault(session_id, set())
        ws = AsgiWebSocket(receive, send)
        scope_ = trio.CancelScope()
        live.add((scope_, ws))
        try:
            await send({"type": "websocket.accept"})
            self.hub.metrics.connections_accepted_total.inc()
            from ..server.connection import Connection
            from ..server.websocket import WebSocketTransport

            # The connection ends when the console session does (never later than the token).
            principal = attrs.evolve(session.principal, expires_at=session.expires_at)
            with scope_:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._end_when_revoked, session_id, ws, scope_)
                    await Connection(self.hub, WebSocketTransport(cast(Any, ws)), principal,
                                     audit_context={"transport": "console"}).serve()
                    nursery.cancel_scope.cancel()
        finally:
            live.discard((scope_, ws))
            if not live:
                self._live.pop(session_id, None)
            self.leave(sub)

    async def _end_when_revoked(self, session_id: str, ws: AsgiWebSocket, scope_: trio.CancelScope) -> None:
        """End the page's connection once its session is gone from the store: a sign-out on
        another instance sharing the database (this instance's own sign-out ends it at once).
        Looks every REVALIDATE_S; a store that cannot be reached keeps the connection."""
        while True:
            await trio.sleep(REVALIDATE_S)
            try:
                live = await self.signins.get(session_id)
            except StoreError:
                continue
            if live is None:
                ws.close_as(4001, "signed out")
                scope_.cancel()
                return


def _need(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"use {allowed}")


def _same_origin_post(headers: Mapping[str, str]) -> None:
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise HttpError(403, "cross-site request refused")
    origin = headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != headers.get("host"):
        raise HttpError(403, "cross-origin request refused")


def _same_origin_fetch(headers: Mapping[str, str]) -> None:
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HttpError(403, "cross-site request refused")


def _peer(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}; {text}" if key == "cookie" and key in found else text
    return found


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _cookie(name: str, value: str, secure: bool, *, max_age: int | None = None) -> tuple[bytes, bytes]:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return b"set-cookie", "; ".join(parts).encode()


def _query_params(scope: Mapping[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] != "http.request":
            raise HttpError(400, "the request ended early")
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "the request is too large")
        chunks.append(chunk)
        if not event.get("more_body"):
            return b"".join(chunks)


def _json(data: Any, extra: Iterable[tuple[bytes, bytes]] = ()) -> Reply:
    return 200, json.dumps(data).encode(), "application/json", [(b"cache-control", b"no-store"), *extra]


async def _respond(send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               *_SECURITY_HEADERS, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
