"""The egress proxy of one tool call: a Unix socket the call's sandbox reaches, and
nothing else.

`open_call_proxy(allowlist, on_record)` binds a fresh Unix socket (under a private
short-named directory: socket paths are limited to 108 bytes), serves it in its own
nursery while the context is open, and yields its path; the sandbox binds that path
into the tool's network namespace, which has no other way out. Each connection sends
one request head:

- ``CONNECT host:port HTTP/1.1`` — a tunnel (TLS goes through it untouched);
- ``GET http://host[:port]/path HTTP/1.1`` (any method) — plain HTTP: the head is
  rewritten to origin form with ``Connection: close`` and sent on, then bytes flow.

The proxy then checks ``host:port`` against the allowlist, resolves a name itself
(once), keeps only addresses the matching entry may reach (global ones, unless the
entry names its ranges), connects to one of the addresses it checked (the first of up
to three that answers) and relays bytes both ways.
There is no admin surface: the socket speaks only this, and the proxy never connects
anywhere the allowlist does not name (the engine's own ports are on loopback, refused
unless an entry names them).

Bounds: the head is at most ``max_head_bytes`` and must arrive within
``handshake_timeout_s``; resolution and connection are time-limited; a relayed
connection idle for ``idle_timeout_s`` in both directions is closed; at most
``max_connections`` run at once (more are answered 503 and closed, a few at a time;
past those, closed unanswered); the copy moves
at most ``chunk_bytes`` per read, counted.

Records: every connection, allowed or refused, ends in exactly one `EgressRecord`
passed to ``on_record`` (awaited, shielded, bounded to 30 s), with the
bytes sent each way. Refusals answer with an HTTP status and an RFC 9209
``Proxy-Status`` header naming why.

Cancellation: closing the context (the call ended) closes the listener and every
open connection; their records are still delivered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import attrs
import trio

from ._allow import Allowlist, IPAddress, IPNetwork, parse_address
from ._request import BadRequest, ProxyRequest, parse_head
from ._resolve import ResolveError, Resolver, SystemResolver

Outcome = Literal["allowed", "refused", "failed"]


@attrs.frozen
class ProxyConfig:
    """Limits and seams of the proxy; every duration in seconds, every size in bytes."""

    max_head_bytes: int = 8192
    handshake_timeout_s: float = 10.0
    resolve_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_connections: int = 16
    chunk_bytes: int = 65536
    resolver: Resolver = SystemResolver()
    # ranges treated as public addresses: stand-ins for the internet in tests and labs
    public_ranges: tuple[IPNetwork, ...] = ()


@attrs.frozen
class EgressRecord:
    """What happened to one connection a tool opened through the proxy."""

    outcome: Outcome
    reason: str  # empty when allowed and nothing failed
    method: str  # CONNECT, GET, ...; "" when the head could not be read
    host: str
    port: int
    address: str | None  # the address connected to (else the first one tried); None when refused before
    bytes_up: int = 0  # tool -> destination
    bytes_down: int = 0  # destination -> tool
    duration_s: float = 0.0


OnRecord = Callable[[EgressRecord], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, status: int, error: str, reason: str, outcome: Outcome = "refused") -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.outcome = status, error, reason, outcome


_STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
                431: "Request Header Fields Too Large", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout"}  # fmt: skip


def _answer(status: int, error: str, reason: str) -> bytes:
    reason = "".join(char if " " <= char <= "~" else "?" for char in reason)  # one printable line
    body = (reason + "\n").encode("ascii", "replace")
    details = reason.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\n"
        f'Proxy-Status: sconnect; error={error}; details="{details}"\r\n'
        f"Content-Type: text/plain; charset=us-ascii\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii", "replace") + body


@contextlib.asynccontextmanager
async def open_call_proxy(
    allowlist: Allowlist,
    on_record: OnRecord,
    *,
    config: ProxyConfig | None = None,
    owner: tuple[int, int] | None = None,
) -> AsyncIterator[str]:
    """Serve a proxy for one call; yields the Unix socket's path.

    ``owner`` (uid, gid) is given the socket when the engine runs as root, so that the
    sandbox user may connect to it (mode 0600; its directory 0711, not listable).
    """
    config = config or ProxyConfig()
    directory = tempfile.mkdtemp(prefix="scx-")
    try:
        os.chmod(directory, 0o711)
        path = os.path.join(directory, "proxy.sock")
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, owner[0], owner[1])
            sock.listen(config.max_connections)
        except BaseException:
            sock.close()
            raise
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve, listener, allowlist, on_record, config)
                try:
                    yield path
                finally:
                    # No await here: it would raise Cancelled and hide what ended the block.
                    nursery.cancel_scope.cancel()
        finally:
            sock.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _serve(listener: trio.SocketListener, allowlist: Allowlist, on_record: OnRecord, config: ProxyConfig) -> None:
    active = [0]
    refusing = [0]
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            if active[0] < config.max_connections:
                active[0] += 1
                nursery.start_soon(_connection, stream, allowlist, on_record, config, active)
            elif refusing[0] < _MAX_REFUSING:
                refusing[0] += 1
                nursery.start_soon(_refuse_over_limit, stream, on_record, config, refusing)
            else:
                await stream.aclose()  # past both limits: not even an answer
                reason = f"more than {config.max_connections} connections at once"
                await _deliver(on_record, EgressRecord("refused", reason, "", "", 0, None))


# Over-limit connections answered at once (each for at most _LINGER_S); past that, closed unanswered.
_MAX_REFUSING = 4
_LINGER_S = 1.0


async def _refuse_over_limit(
    stream: trio.SocketStream, on_record: OnRecord, config: ProxyConfig, refusing: list[int]
) -> None:
    reason = f"more than {config.max_connections} connections at once"
    try:
        with trio.move_on_after(_LINGER_S):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(_answer(503, "connection_limit_reached", reason))
        await _linger(stream)
    finally:
        refusing[0] -= 1
        with trio.move_on_after(1, shield=True):
            await stream.aclose()
        await _deliver(on_record, EgressRecord("refused", reason, "", "", 0, None))


async def _linger(stream: trio.SocketStream) -> None:
    """End our side, then read (and drop) what the client still sends, briefly and
    boundedly: closing a Unix socket with unread data resets it, and the client would
    lose the answer it was sent."""
    with trio.move_on_after(_LINGER_S):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.send_eof()
            total = 0
            while total < 2**20 and (chunk := await stream.receive_some(65536)):
                total += len(chunk)


async def _deliver(on_record: OnRecord, record: EgressRecord) -> None:
    # Shielded: a record is delivered even when the call is ending; bounded, so that a
    # stuck audit cannot hold the call open forever.
    with trio.move_on_after(30, shield=True):
        await on_record(record)


async def _connection(
    stream: trio.SocketStream, allowlist: Allowlist, on_record: OnRecord, config: ProxyConfig, active: list[int]
) -> None:
    started = trio.current_time()
    counts = {"up": 0, "down": 0}
    request: ProxyRequest | None = None
    address: IPAddress | None = None
    outcome: Outcome = "allowed"
    reason = ""
    try:
        try:
            head, rest = await _read_head(stream, config)
            try:
                request = parse_head(head)
            except BadRequest as exc:
                raise _Refused(400, "http_request_error", str(exc)) from None
            candidates = await _checked_addresses(request, allowlist, config)
            address = candidates[0]
            upstream, address = await _connect(candidates, request.port, config)
        except Exception as exc:  # noqa: BLE001 - one bad connection never takes the call's proxy down
            refused = exc if isinstance(exc, _Refused) else _Refused(
                502, "proxy_internal_error", f"internal error: {type(exc).__name__}", "failed"
            )  # fmt: skip
            outcome, reason = refused.outcome, refused.reason
            with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(_answer(refused.status, refused.error, refused.reason))
            await _linger(stream)
            return
        async with upstream:
            try:
                if request.tunnel:
                    await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    await upstream.send_all(request.upstream_head)
                    counts["up"] += len(request.upstream_head)
                if rest:
                    await upstream.send_all(rest)
                    counts["up"] += len(rest)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                reason = "closed before relaying"
                return
            timed_out = await _relay(stream, upstream, counts, config)
            if timed_out:
                reason = f"closed after {config.idle_timeout_s:g}s idle"
    finally:
        active[0] -= 1
        with trio.move_on_after(1, shield=True):
            await stream.aclose()
        await _deliver(on_record, EgressRecord(
            outcome=outcome, reason=reason, method=request.method if request else "",
            host=request.host if request else "", port=request.port if request else 0,
            address=str(address) if address is not None else None,
            bytes_up=counts["up"], bytes_down=counts["down"],
            duration_s=round(trio.current_time() - started, 6),
        ))  # fmt: skip


async def _read_head(stream: trio.SocketStream, config: ProxyConfig) -> tuple[bytes, bytes]:
    """(the head up to and including CRLF CRLF, bytes after it); _Refused otherwise."""
    buffer = bytearray()
    with trio.move_on_after(config.handshake_timeout_s):
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])
            if len(buffer) >= config.max_head_bytes:
                raise _Refused(431, "http_request_error", f"request head larger than {config.max_head_bytes} bytes")
            try:
                data = await stream.receive_some(config.max_head_bytes - len(buffer) + 4)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                raise _Refused(400, "http_request_error", "connection closed before a complete request")
            buffer += data
    raise _Refused(408, "http_request_error", f"no complete request within {config.handshake_timeout_s:g}s")


async def _checked_addresses(
    request: ProxyRequest, allowlist: Allowlist, config: ProxyConfig
) -> tuple[IPAddress, ...]:
    """The addresses this request may connect to, in the resolver's order (resolved
    once, each checked; at most `_MAX_TRIES`)."""
    entry, why = allowlist.match(request.host, request.port)
    if entry is None:
        raise _Refused(403, "http_request_denied", why)
    literal = parse_address(request.host)
    if literal is not None:
        if not entry.reaches(literal, config.public_ranges):
            raise _Refused(403, "destination_ip_prohibited", f"address {literal} is not allowed")
        return (literal,)
    try:
        with trio.fail_after(config.resolve_timeout_s):
            addresses = await config.resolver.resolve(request.host, request.port)
    except ResolveError as exc:
        raise _Refused(502, "dns_error", str(exc), "failed") from None
    except trio.TooSlowError:
        raise _Refused(504, "dns_timeout", f"{request.host} did not resolve within {config.resolve_timeout_s:g}s",
                       "failed") from None  # fmt: skip
    allowed = tuple(address for address in addresses if entry.reaches(address, config.public_ranges))
    if allowed:
        return allowed[:_MAX_TRIES]
    shown = ", ".join(map(str, addresses[:4]))
    if entry.addresses:
        why = f"{request.host} resolves to {shown}, outside the addresses its entry allows"
    else:
        why = (f"{request.host} resolves to {shown}: loopback, link-local and private addresses need an entry "
               "that names them (addresses: [...])")  # fmt: skip
    raise _Refused(403, "destination_ip_prohibited", why)


# Checked addresses tried in turn (an IPv6 answer first on a host without IPv6 is common).
_MAX_TRIES = 3


async def _connect(
    addresses: tuple[IPAddress, ...], port: int, config: ProxyConfig
) -> tuple[trio.SocketStream, IPAddress]:
    """A connection to the first checked address that answers, within one time limit."""
    failure = ""
    try:
        with trio.fail_after(config.connect_timeout_s):
            for address in addresses:
                try:
                    return await trio.open_tcp_stream(str(address), port), address
                except OSError as exc:
                    failure = f"cannot connect to {address}:{port}: {exc.strerror or exc}"
    except trio.TooSlowError:
        shown = ", ".join(str(address) for address in addresses)
        why = f"{shown} (port {port}) did not answer within {config.connect_timeout_s:g}s"
        raise _Refused(504, "connection_timeout", why, "failed") from None
    raise _Refused(502, "connection_refused", failure, "failed")


async def _relay(
    tool: trio.SocketStream, upstream: trio.SocketStream, counts: dict[str, int], config: ProxyConfig
) -> bool:
    """Copy both ways until both ends are done, or either breaks; True when idle too long."""
    with trio.CancelScope(deadline=trio.current_time() + config.idle_timeout_s) as idle:

        async def pump(
            source: trio.SocketStream, sink: trio.SocketStream, direction: str, done: trio.CancelScope
        ) -> None:
            try:
                while True:
                    data = await source.receive_some(config.chunk_bytes)
                    idle.deadline = trio.current_time() + config.idle_timeout_s
                    if not data:
                        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            await sink.send_eof()
                        return
                    counts[direction] += len(data)
                    await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                done.cancel()  # one side is gone: the other direction has nowhere to go

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, tool, upstream, "up", nursery.cancel_scope)
            nursery.start_soon(pump, upstream, tool, "down", nursery.cancel_scope)
    return idle.cancelled_caught
