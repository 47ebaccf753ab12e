"""``serve``: the listening socket, the handshake (with authentication), one task per connection.

The TCP stream is ours (``trio.serve_tcp`` + ``wrap_server_stream``), not
trio-websocket's server loop, so that a rejected handshake closes its socket
at once and a client that never finishes the handshake is dropped after
``handshake_timeout_s``; and so that one failing connection can never end the
server (every connection task has a catch-all).

Descriptors: the limits on connections are derived from the open-files limit at
start (:mod:`.fdbudget`), and a TCP connection past the handshake limits (overall,
per peer address: :mod:`.admission`) is closed the moment it is accepted.

Background tasks (the config watcher, the retention sweep, the health listener) log a
failure and retry with a backoff: a transient error (EMFILE, a locked database) never
ends the server.
A listener that cannot be opened is a :class:`ListenError` naming the address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import trio
from trio_websocket import wrap_server_stream

import sandbox

from .. import tracing
from ..audit import AuditEvent, AuditLog, PgAuditLog, open_audit
from ..auth import AuthError, Principal, token_from_request, verify
from ..config import load_config
from ..errors import ScalyticsError
from ..protocol import ErrorCode, ErrorFrame
from ..store import Store, StoreError, instance_id, open_store
from ..upstream import for_hub
from . import fdbudget
from .admission import Admission
from .connection import NO_AUDIT_CONTEXT, Connection
from .health import serve_health
from .hub import Hub
from .maintenance import maintain
from .reload import watch_config
from .settings import DATABASE_NAME, ServerSettings
from .websocket import WebSocketTransport

log = logging.getLogger(__name__)
# Handshakes turned away for want of a slot are logged in aggregate, at most this often.
TURNED_AWAY_LOG_S = 10.0


class ListenError(ScalyticsError, OSError):
    """A listener could not be opened: the message names the address and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


@attrs.define(eq=False)
class ServerHandle:
    """A running server: where it listens, and how to ask it to stop gracefully."""

    websocket: str
    health: str | None
    mcp: str | None = None
    # The browser console (engine.console.ConsoleHandle): its URL and one-time sign-in links.
    console: Any = None
    _stop_requested: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Begin a graceful stop; ``serve`` returns when it is done."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()


def prepare_state_dir(state_dir: Path) -> None:
    """The state directory with the tools' shared ``workspace/`` and per-call ``work/`` root.

    The directory is 0711: the sandbox user (sandbox.SANDBOX_UID) must traverse it to reach
    ``workspace/`` and ``work/``, but may not list it; everything secret in it
    (database, JWT secret) is created 0600 so that only the service reads it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o711)
    workspace = state_dir / "workspace"
    for path in (workspace, state_dir / "work"):
        path.mkdir(exist_ok=True)
    # SQLite gives its -wal and -shm files the database file's mode.
    os.close(os.open(state_dir / DATABASE_NAME, os.O_CREAT | os.O_WRONLY, 0o600))
    if os.geteuid() == 0:
        # Tools run as an unprivileged uid (sandbox.SANDBOX_UID): the workspace must be theirs
        # to write; they reach nothing else of the state directory unless it is bound in.
        os.chown(workspace, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


async def serve(
    settings: ServerSettings, *, task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until :meth:`ServerHandle.stop` is called (graceful) or until cancelled (immediate).

    ``task_status.started`` gets the :class:`ServerHandle` (URLs with port 0 resolved).

    Graceful stop: refuse new connections, tell the connected clients, let running
    turns and calls finish for up to ``shutdown_grace_s``, then cancel what is left
    (its tools are killed and their executions audited as cancelled), and only then
    stop the audit writer, which commits what is queued and writes its shutdown
    checkpoint.  The audit writer lives in the outer nursery for that reason: every
    record of the shutdown itself is written before it stops.
    """
    settings = fdbudget.apply(settings)
    tracing.configure_from_env()  # OTEL_TRACES_EXPORTER; off (no cost) unless set
    config = load_config(settings.config_dir)
    prepare_state_dir(settings.state_dir)
    caps = sandbox.detect()
    admission = Admission.for_settings(settings)
    # The audit log first: its key (never stored in either database) keys the store's digests.
    # On PostgreSQL it is the chain every instance shares (engine.audit._shared).
    async with await open_audit(settings.state_dir, settings.database_url) as audit, \
            await open_store(settings.database, settings.database_url, digest_key=audit.digest_key,
                             instance=instance_id(settings.state_dir) if settings.database_url else None) as store:
        hub = Hub(settings=settings, config=config, store=store, audit=audit)
        upstreams = for_hub(hub)  # MCP servers used as tools; current for every task below
        handle = ServerHandle(websocket="", health=None)
        # Approvals live in memory: nobody waits any more for those a previous run left pending.
        # On PostgreSQL only this instance's (store.instance): the others' may be live; those of
        # an instance that died and does not come back expire at their expires_at (maintenance).
        orphans = await store.cancel_pending_actions("the server restarted before it was answered")
        if orphans:
            log.info("%d approval requests left pending by the previous run: cancelled", orphans)
        # Warm sandboxes of `isolation: pool` tools live as long as the server, no longer.
        async with sandbox.open_pools(), trio.open_nursery() as root:
            # The audit writer first: nothing may be decided before it can record.
            await root.start(audit.run)
            async with trio.open_nursery() as nursery:
                hub.nursery = nursery
                hub.metrics.track(
                    connections=lambda: len(hub.connections),
                    sessions=lambda: len(hub.sessions),
                    pending_approvals=lambda: len(hub.approvals.pending),
                    revision=lambda: hub.policy_revision,
                )
                if settings.health_port is not None:
                    handle.health = await nursery.start(_keep_health, hub)
                await nursery.start(upstreams.run, config)
                await nursery.start(
                    partial(watch_config, hub, interval_s=settings.reload_interval_s, signals=settings.reload_signals)
                )
                await nursery.start(maintain, hub)
                if settings.database_url:
                    # Approvals, controls and limits across the instances sharing the database.
                    from .pgbus import PgBus

                    await nursery.start(partial(PgBus.serve, hub, settings.database_url, admission,
                                                heartbeat_s=settings.instance_heartbeat_s))
                nursery.start_soon(_watch_database, store, audit)
                # Set on a graceful stop: the HTTP listeners (MCP, console) stop accepting and drain.
                mcp_stop = trio.Event()
                if settings.mcp_port is not None:
                    from ..mcp import serve_mcp  # the MCP SDK loads only when MCP is on

                    with _listening(settings.host, settings.mcp_port, "--mcp-port"):
                        handle.mcp = await nursery.start(partial(
                            serve_mcp, hub, settings.host, settings.mcp_port, mcp_stop,
                            anonymous_role=settings.mcp_anonymous_role,
                        ))
                if settings.console_port is not None:
                    from ..console import serve_console  # hypercorn loads only when the console is on

                    with _listening(settings.console_host, settings.console_port, "--console-port"):
                        handle.console = await nursery.start(partial(
                            serve_console, hub, settings.console_host, settings.console_port, mcp_stop,
                            admit=admission.admit, leave=admission.leave,
                        ))
                accepting = trio.CancelScope()
                port = await nursery.start(_accept, hub, admission, accepting)
                scheme = "wss" if settings.tls_cert is not None else "ws"
                handle.websocket = f"{scheme}://{settings.host}:{port}{settings.path}"
                hub.serving = True
                log.info("serving %s (%s)", handle.websocket, caps.summary)
                task_status.started(handle)
                await handle._stop_requested.wait()
                mcp_stop.set()
                await _drain(hub, accepting)
                nursery.cancel_scope.cancel()
            root.cancel_scope.cancel()
    log.info("stopped")


async def _keep_health(hub: Hub, *, task_status: trio.TaskStatus[str]) -> None:
    """The health listener; restarted on the same port (with a backoff) if it ever fails.

    A failure to open it at start is a ListenError, as for the WebSocket port.
    """
    settings = hub.settings
    assert settings.health_port is not None
    port, url, delay = settings.health_port, None, 1.0
    while True:
        try:
            async with trio.open_nursery() as nursery:
                listener = partial(
                    serve_health, settings.health_host, port, metrics=hub.metrics, ready=partial(_ready, hub)
                )
                with _listening(settings.health_host, port, "--health-port"):
                    started = await nursery.start(listener)
                if url is None:
                    url = started
                    port = int(started.rsplit(":", 1)[1])  # port 0 resolved: restarts keep the URL
                    task_status.started(started)
                delay = 1.0
        except Exception as exc:
            if url is None:
                raise
            log.warning("health listener failed (%s: %s); restarting in %gs", type(exc).__name__, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)


@contextlib.contextmanager
def _listening(host: str, port: int, flag: str) -> Iterator[None]:
    """An OSError while opening a listener (alone, or inside the exception group of the
    HTTP server's own nursery) becomes a ListenError naming the address and the flag."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        cause = _os_error_in(exc)
        if cause is None or isinstance(cause, ListenError):
            raise
        reason = cause.strerror or str(cause)
        raise ListenError(
            cause.errno, f"cannot listen on {host}:{port}: {reason} (pick another {flag}, or 0 for a free one)"
        ) from exc


def _os_error_in(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error_in(inner)
            if found is not None:
                return found
    return None


async def _accept(
    hub: Hub, admission: Admission, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]
) -> None:
    """Listen for clients until ``scope`` is cancelled (the first step of a graceful stop)."""
    settings = hub.settings
    with scope:
        with _listening(settings.host, settings.port, "--port"):
            tcp = await trio.open_tcp_listeners(settings.port, host=settings.host)
        port = tcp[0].socket.getsockname()[1]
        listeners: list[Any] = list(tcp)
        if settings.tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            listeners = [trio.SSLListener(listener, context, https_compatible=True) for listener in tcp]
        task_status.started(port)
        # Connections live in the hub's nursery, not the listener's: stopping the
        # listener (graceful stop) must not end the connections it accepted.
        await trio.serve_listeners(partial(_handle_stream, hub, admission), listeners, handler_nursery=hub.nursery)


async def _drain(hub: Hub, accepting: trio.CancelScope) -> None:
    grace = hub.settings.shutdown_grace_s
    hub.shutting_down = True
    accepting.cancel()
    log.info("shutting down: no new connections; running work may finish for %gs", grace)
    notice = ErrorFrame(
        code=ErrorCode.UNAVAILABLE,
        message=f"the server is shutting down; running turns may finish within {grace:g}s",
    )
    for conn in list(hub.connections):
        conn.send(notice, control=True)
    with trio.move_on_after(grace):
        while hub.busy():  # noqa: ASYNC110 (busy() has no event)
            await trio.sleep(0.05)
    if hub.busy():
        log.warning("shutdown grace period over: cancelling the work still running")


async def _handle_stream(hub: Hub, admission: Admission, stream: trio.SocketStream) -> None:
    """One TCP connection, from handshake to close; the socket is closed here whatever happened.

    Closing it ourselves matters: a refused handshake must not keep its socket until the
    client leaves, and a client that stopped reading cannot complete a close handshake.
    A connection past the handshake limits is closed at once, before a byte is read.

    Memory: this task holds, for the connection's life, one nursery (trio-websocket's
    reader lives in it; its cancel scope is also the one an eviction cancels) and the
    :class:`Connection`; the handshake's request, headers and token are dropped once
    it is accepted.
    """
    peer = _peer(stream, port=False)
    evicted = False
    ticket: object | None = None
    try:
        async with trio.open_nursery() as nursery:
            # Cancelled by the admission if this handshake is evicted (only before handshake_over).
            ticket = admission.begin_handshake(peer, nursery.cancel_scope)
            if ticket is None:
                _turned_away(admission)
                await trio.aclose_forcefully(stream)
                return
            try:
                accepted = await _handshake(hub, admission, stream, nursery, partial(admission.end_handshake, ticket))
                if accepted is not None:
                    conn, sub, trace = accepted
                    try:
                        if trace is None:
                            await conn.serve()
                        else:
                            # A traceparent on the handshake: this connection's turns and calls continue that trace.
                            with tracing.continued(trace):
                                await conn.serve()
                    finally:
                        admission.leave(sub)
            finally:
                evicted = nursery.cancel_scope.cancel_called
                nursery.cancel_scope.cancel()
        if evicted:
            _turned_away(admission)
    except Exception:
        # One broken connection must never end the server.
        log.exception("connection failed")
    finally:
        if ticket is not None:
            # Idempotent; once over, an eviction can no longer reach this connection.
            admission.end_handshake(ticket)
            with trio.move_on_after(0.5, shield=True):
                await stream.aclose()


def _turned_away(admission: Admission) -> None:
    now = trio.current_time()
    if now - admission.warned_at >= TURNED_AWAY_LOG_S:
        log.warning(
            "%d connections closed on arrival so far: %d handshakes in progress (limit handshakes %d, "
            "handshakes_per_peer %d)", admission.turned_away, admission.handshakes,
            admission.max_handshakes, admission.max_handshakes_per_peer,
        )
        admission.warned_at = now


async def _handshake(
    hub: Hub, admission: Admission, stream: trio.SocketStream, nursery: trio.Nursery,
    handshake_over: Callable[[], None],
) -> tuple[Connection, str, list[tuple[bytes, bytes]] | None] | None:
    """The accepted connection, its subject, whose admission slot is taken (the caller
    leaves it), and the headers that name its trace (when tracing is on); None when the
    handshake was refused or timed out (the client was told)."""
    request = None
    with trio.move_on_after(hub.settings.handshake_timeout_s):
        request = await wrap_server_stream(nursery, stream, max_message_size=hub.settings.max_frame_bytes)
    if request is None:
        return None
    path = request.path.split("?", 1)[0]
    if path != hub.settings.path:
        await _reject(request, 404, "not_found", f"the WebSocket endpoint is {hub.settings.path}")
        return None
    try:
        principal = verify(token_from_request(request.path, request.headers), hub.settings.auth)
    except AuthError as exc:
        log.warning("authentication failed from %s: %s (%s)", _peer(stream), exc.reason, exc)
        hub.metrics.auth_failures_total.inc(reason=str(exc.reason))
        await hub.audit.record(
            AuditEvent(
                kind="auth_failure", outcome=str(exc.reason),
                details={"peer": _peer(stream), "path": path, "message": str(exc)},
            )
        )
        await _reject(request, 401, "unauthorized", str(exc), bearer_error=True)
        return None
    # The slot is taken here, before the first await that follows the check (see admission).
    refusal = admission.admit(principal.sub)
    if refusal is not None:
        status, message = refusal
        log.warning("connection from %s refused: %s", principal.sub, message)
        await _reject(request, status, "rate_limited", message)
        return None
    try:
        ws = await request.accept()
        handshake_over()
        hub.metrics.connections_accepted_total.inc()
        from ..mcp._via import parse_via  # no MCP SDK import: the stdio bridge's audit note

        conn = Connection(hub, WebSocketTransport(ws), _shared_roles(principal),
                          audit_context=parse_via(request.headers) or NO_AUDIT_CONTEXT)
    except BaseException:
        admission.leave(principal.sub)
        raise
    return conn, principal.sub, list(request.headers) if tracing.enabled() else None


# One frozenset per distinct set of roles, shared by the connections that hold it (each
# verified token would otherwise keep its own ~200 bytes for as long as it is connected).
_ROLES: dict[frozenset[str], frozenset[str]] = {}
_ROLES_MAX = 1024
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


def _shared_roles(principal: Principal) -> Principal:
    """The principal a connection keeps: its roles set shared with every connection of
    the same roles, and without the token's other claims (nothing on a WebSocket reads
    them; only the console's sign-in keeps them, from its own verification): ~0.85 KiB
    less per idle connection."""
    roles = _ROLES.get(principal.roles)
    if roles is None:
        if len(_ROLES) >= _ROLES_MAX:
            _ROLES.clear()
        roles = _ROLES[principal.roles] = principal.roles
    return attrs.evolve(principal, roles=roles, claims=_NO_CLAIMS)


async def _watch_database(store: Store, audit: AuditLog) -> None:
    """While the database is unavailable (a call failed), try it every second, so that
    /readyz turns ready again when it is back even if the balancer sends no traffic.
    On PostgreSQL the audit log's own connections are watched too: after an outage they
    reconnect on their own schedule, and nothing can run before they do."""
    shared = audit if isinstance(audit, PgAuditLog) else None
    while True:
        await trio.sleep(1.0 if not store.available or (shared and not shared.available) else 5.0)
        if not store.available:
            with contextlib.suppress(StoreError):
                await store.ping()
        if shared is not None and not shared.available:
            await shared.ping()


def _ready(hub: Hub) -> tuple[bool, str]:
    """For load balancers: take traffic only when serving; a refused reload stays ready (old config serves)."""
    if hub.shutting_down:
        return False, "shutting down"
    if not hub.serving:
        return False, "starting"
    if not hub.audit.running:
        return False, "the audit writer is not running"
    if not hub.store.available:
        return False, f"the database {hub.store.where} is unavailable"
    if not getattr(hub.audit, "available", True):  # PgAuditLog: its own connections to the database
        return False, f"the audit log's database {hub.store.where} is unavailable"
    if hub.reload_errors:
        refused = len(hub.reload_errors)
        return True, f"serving the last good configuration; the last reload was refused ({refused} errors)"
    return True, "configuration loaded, audit writer running"


def _peer(stream: Any, *, port: bool = True) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, number = inner.socket.getpeername()[:2]
    except (OSError, AttributeError):
        return "unknown"
    return f"{host}:{number}" if port else str(host)


async def _reject(request: object, status: int, code: str, message: str, *, bearer_error: bool = False) -> None:
    headers = [(b"Content-Type", b"application/json")]
    if bearer_error:
        headers.append((b"WWW-Authenticate", b'Bearer error="invalid_token"'))
    body = json.dumps({"code": code, "message": message}).encode()
    with trio.move_on_after(2):
        await request.reject(status, extra_headers=headers, body=body)  # type: ignore[attr-defined]
