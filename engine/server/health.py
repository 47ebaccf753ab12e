"""The health and metrics listener: ``/healthz``, ``/readyz`` and ``/metrics`` over plain HTTP/1.1.

A separate listener from the WebSocket server (``--health-port``), so that a
load balancer or Prometheus can reach it without a token, and so that probes
keep answering however busy or hostile the WebSocket side is.

- ``GET /healthz``: 200 ``ok`` while the process serves (liveness).
- ``GET /readyz``: 200 ``ready`` when ``ready()`` returns ``(True, ...)``, else 503
  with its reason (readiness: config loaded, audit writer running, not draining).
- ``GET /metrics``: 200, the registry in the Prometheus text format 0.0.4.
- Any other path 404; any method but GET and HEAD 405 (with ``Allow``).

HTTP parsing is h11's (already installed with wsproto), one request per
connection: every response carries ``Connection: close`` and the socket is
closed after it, so there is no keep-alive state to bound.

Resource handling: each connection gets ``request_timeout_s`` in total to
deliver its request line and headers (a slow-loris client is dropped, not
answered) and as long again to take the response; a request head larger than
``max_request_bytes`` is answered 431; at most ``max_connections`` connections
are handled at once and further ones are closed at once, so probes cannot be
starved of descriptors for long.  No threads: ``ready()`` and the metrics
rendering run in the connection's task and must not block.

Error handling: one bad client never ends the listener -- every connection
task catches everything but cancellation, logs it (debug for client mistakes,
an error with a traceback for our own bugs) and closes its socket.  A failing
``ready()`` reads as not ready; a failing ``render()`` is a 500.  Cancelling
:func:`serve_health` closes the listening sockets and every open connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import NoReturn, Protocol

import h11
import trio

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
REQUEST_TIMEOUT_S = 5.0
# Request line plus headers; a probe or a scraper sends a few hundred bytes.
MAX_REQUEST_BYTES = 8192
MAX_CONNECTIONS = 64
_RECEIVE_BYTES = 4096


class Exposition(Protocol):
    """Anything that renders metrics in the text format (``Registry``, ``ServerMetrics``)."""

    def render(self) -> str: ...


ReadyCheck = Callable[[], tuple[bool, str]]


async def serve_health(
    host: str,
    port: int,
    *,
    metrics: Exposition,
    ready: ReadyCheck,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve health and metrics on ``host:port`` until cancelled.

    ``task_status.started`` gets the ``http://HOST:PORT`` URL, with port 0 resolved.
    When ``host`` resolves to several addresses (``localhost``: ``::1`` and
    ``127.0.0.1``) and ``port`` is 0, each listener would get a different port; then
    only the first is kept and the URL names its address, so the URL always works.
    Raises ``OSError`` when the port cannot be bound (before ``started``).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
        url_host = listeners[0].socket.getsockname()[0]
    else:
        url_host = host
    bound_port = listeners[0].socket.getsockname()[1]
    if ":" in url_host:
        url_host = f"[{url_host}]"
    limiter = trio.CapacityLimiter(max_connections)
    handler = partial(
        _handle_connection, metrics=metrics, ready=ready, limiter=limiter,
        request_timeout_s=request_timeout_s, max_request_bytes=max_request_bytes,
    )
    async with trio.open_nursery() as nursery:
        # serve_listeners reports started once accepting; its handler tasks live in this nursery.
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(f"http://{url_host}:{bound_port}")
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # the nursery only ends by cancellation or error


async def _handle_connection(
    stream: trio.SocketStream, *, metrics: Exposition, ready: ReadyCheck, limiter: trio.CapacityLimiter,
    request_timeout_s: float, max_request_bytes: int,
) -> None:
    try:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            log.warning("health listener busy: connection dropped", extra={"max_connections": limiter.total_tokens})
            return
        try:
            await _serve_one(stream, metrics, ready, request_timeout_s, max_request_bytes)
        finally:
            limiter.release()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError) as exc:
        # The client went away or spoke nonsense mid-exchange: its problem, not ours.
        log.debug("health client failed: %s", exc)
    except Exception:
        # Never let one connection end the listener (trio's serve_listeners would propagate it).
        log.exception("health request failed")
    finally:
        with trio.move_on_after(0.5, shield=True):
            await stream.aclose()


async def _serve_one(
    stream: trio.SocketStream, metrics: Exposition, ready: ReadyCheck, request_timeout_s: float,
    max_request_bytes: int,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_request_bytes)
    request: h11.Request | None = None
    with trio.move_on_after(request_timeout_s):
        try:
            request = await _read_request(stream, conn, max_request_bytes)
        except h11.RemoteProtocolError as exc:
            # Malformed, or a head over max_request_bytes (h11 hints 431): say so, then close.
            status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
            text = f"{HTTPStatus(status).phrase}: {exc}\n"[:512]
            # h11 lets a server answer after the client's protocol error (our side is still IDLE).
            await _send(stream, conn, status, text.encode("utf-8", "replace"), content_type=TEXT, head=False, extra=[])
            return
    if request is None:
        # Timed out, or the client closed before a whole request head: nothing to answer.
        return
    method = request.method.decode("ascii", "replace").upper()
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    status, content_type, body, extra = _route(method, path, metrics, ready)
    with trio.move_on_after(request_timeout_s):
        await _send(stream, conn, status, body, content_type=content_type, head=method == "HEAD", extra=extra)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection, max_bytes: int) -> h11.Request | None:
    """The request head; None if the client closed before sending one.

    h11's own limit only applies to a head that is still incomplete; one that
    arrives whole in a single read is counted here, so the limit holds either way.
    """
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE_BYTES)
            received += len(data)
            if received > max_bytes:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            return event
        # ConnectionClosed (EOF before a request) -- anything else cannot come first.
        return None


def _route(
    method: str, path: str, metrics: Exposition, ready: ReadyCheck
) -> tuple[int, str, bytes, list[tuple[str, str]]]:
    """(status, content type, body, extra headers) for one request; no I/O."""
    if path not in ("/healthz", "/readyz", "/metrics"):
        return 404, TEXT, b"not found: try /healthz, /readyz or /metrics\n", []
    if method not in ("GET", "HEAD"):
        return 405, TEXT, b"method not allowed\n", [("Allow", "GET, HEAD")]
    if path == "/healthz":
        return 200, TEXT, b"ok\n", []
    if path == "/readyz":
        try:
            is_ready, reason = ready()
        except Exception:
            log.exception("readiness check failed")
            is_ready, reason = False, "the readiness check failed; see the server log"
        if is_ready:
            return 200, TEXT, f"ready{': ' + reason if reason else ''}\n".encode(), []
        return 503, TEXT, f"not ready: {reason or 'unknown reason'}\n".encode(), []
    try:
        text = metrics.render()
    except Exception:
        log.exception("rendering metrics failed")
        return 500, TEXT, b"rendering metrics failed; see the server log\n", []
    return 200, METRICS_CONTENT_TYPE, text.encode(), []


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes, *, content_type: str,
    head: bool, extra: list[tuple[str, str]],
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
        *extra,
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()))
    # A HEAD response has the GET headers (length included) but no body; h11 enforces it.
    if not head:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
