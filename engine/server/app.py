"""``serve``: the listening socket, the handshake (with authentication), one task per connection.

The TCP stream is ours (``trio.serve_tcp`` + ``wrap_server_stream``), not
trio-websocket's server loop, so that a rejected handshake closes its socket
at once and a client that never finishes the handshake is dropped after
``handshake_timeout_s``; and so that one failing connection can never end the
server (every connection task has a catch-all).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import wrap_server_stream

import sandbox

from ..audit import AuditEvent, AuditLog
from ..auth import AuthError, token_from_request, verify
from ..config import load_config
from ..protocol import ErrorCode, ErrorFrame
from ..store import Store
from ..upstream import for_hub
from .connection import Connection
from .health import serve_health
from .hub import Hub
from .reload import watch_config
from .settings import DATABASE_NAME, ServerSettings

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class ServerHandle:
    """A running server: where it listens, and how to ask it to stop gracefully."""

    websocket: str
    health: str | None
    _stop_requested: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Begin a graceful stop; ``serve`` returns when it is done."""
        self._stop_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()


def prepare_state_dir(state_dir: Path) -> None:
    """The state directory with the tools' shared ``workspace/`` and per-call ``work/`` root.

    The directory is 0711: the sandbox user (uid 65534) must traverse it to reach
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
    config = load_config(settings.config_dir)
    prepare_state_dir(settings.state_dir)
    caps = sandbox.detect()
    async with await Store.open(settings.database) as store, await AuditLog.open(settings.state_dir) as audit:
        hub = Hub(settings=settings, config=config, store=store, audit=audit)
        upstreams = for_hub(hub)  # MCP servers used as tools; current for every task below
        handle = ServerHandle(websocket="", health=None)
        async with trio.open_nursery() as root:
            # The audit writer first: nothing may be decided before it can record.
            await root.start(audit.run)
            async with trio.open_nursery() as nursery:
                hub.nursery = nursery
                hub.metrics.track(
                    connections=lambda: len(hub.connections),
                    sessions=lambda: len(hub.sessions),
                    pending_approvals=lambda: len(hub.approvals.pending),
                )
                if settings.health_port is not None:
                    handle.health = await nursery.start(
                        partial(serve_health, settings.health_host, settings.health_port, metrics=hub.metrics,
                                ready=partial(_ready, hub))
                    )
                await nursery.start(upstreams.run, config)
                await nursery.start(
                    partial(watch_config, hub, interval_s=settings.reload_interval_s, signals=settings.reload_signals)
                )
                accepting = trio.CancelScope()
                port = await nursery.start(_accept, hub, accepting)
                scheme = "wss" if settings.tls_cert is not None else "ws"
                handle.websocket = f"{scheme}://{settings.host}:{port}{settings.path}"
                hub.serving = True
                log.info("serving %s (%s)", handle.websocket, caps.summary)
                task_status.started(handle)
                await handle._stop_requested.wait()
                await _drain(hub, accepting)
                nursery.cancel_scope.cancel()
            root.cancel_scope.cancel()
    log.info("stopped")


async def _accept(hub: Hub, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]) -> None:
    """Listen for clients until ``scope`` is cancelled (the first step of a graceful stop)."""
    settings = hub.settings
    with scope:
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
        await trio.serve_listeners(partial(_handle_stream, hub), listeners, handler_nursery=hub.nursery)


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
        conn.send(notice)
    with trio.move_on_after(grace):
        while hub.busy():
            await trio.sleep(0.05)
    if hub.busy():
        log.warning("shutdown grace period over: cancelling the work still running")


async def _handle_stream(hub: Hub, stream: trio.SocketStream) -> None:
    """One TCP connection, from handshake to close; the socket is closed here whatever happened.

    Closing it ourselves matters: a refused handshake must not keep its socket until the
    client leaves, and a client that stopped reading cannot complete a close handshake.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                await _handshake_and_serve(hub, stream, nursery)
            finally:
                nursery.cancel_scope.cancel()
    except Exception:
        # One broken connection must never end the server.
        log.exception("connection failed")
    finally:
        with trio.move_on_after(0.5, shield=True):
            await stream.aclose()


async def _handshake_and_serve(hub: Hub, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
    request = None
    with trio.move_on_after(hub.settings.handshake_timeout_s):
        request = await wrap_server_stream(nursery, stream, max_message_size=hub.settings.max_frame_bytes)
    if request is None:
        return
    path = request.path.split("?", 1)[0]
    if path != hub.settings.path:
        await _reject(request, 404, "not_found", f"the WebSocket endpoint is {hub.settings.path}")
        return
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
        return
    refusal = _over_limit(hub, principal.sub)
    if refusal is not None:
        status, message = refusal
        log.warning("connection from %s refused: %s", principal.sub, message)
        await _reject(request, status, "rate_limited", message)
        return
    ws = await request.accept()
    hub.metrics.connections_accepted_total.inc()
    await Connection(hub, ws, principal).serve()


def _over_limit(hub: Hub, sub: str) -> tuple[int, str] | None:
    settings = hub.settings
    if len(hub.connections) >= settings.max_connections:
        return 503, f"the server holds its maximum of {settings.max_connections} connections; retry later"
    mine = sum(1 for conn in hub.connections if conn.principal.sub == sub)
    if mine >= settings.max_connections_per_subject:
        return 429, f"{sub} already holds {mine} connections (the maximum per subject)"
    return None


def _ready(hub: Hub) -> tuple[bool, str]:
    """For load balancers: take traffic only when serving; a refused reload stays ready (old config serves)."""
    if hub.shutting_down:
        return False, "shutting down"
    if not hub.serving:
        return False, "starting"
    if not hub.audit.running:
        return False, "the audit writer is not running"
    if hub.reload_errors:
        return True, f"serving the last good configuration; the last reload was refused ({len(hub.reload_errors)} errors)"
    return True, "configuration loaded, audit writer running"


def _peer(stream: Any) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = inner.socket.getpeername()[:2]
    except (OSError, AttributeError):
        return "unknown"
    return f"{host}:{port}"


async def _reject(request: object, status: int, code: str, message: str, *, bearer_error: bool = False) -> None:
    headers = [(b"Content-Type", b"application/json")]
    if bearer_error:
        headers.append((b"WWW-Authenticate", b'Bearer error="invalid_token"'))
    body = json.dumps({"code": code, "message": message}).encode()
    with trio.move_on_after(2):
        await request.reject(status, extra_headers=headers, body=body)  # type: ignore[attr-defined]
