"""A tiny HTTP/1.1 server on a loopback address, standing in for an allowed (or a
forbidden) host in the egress tests: Trio, no threads, one request per connection.

`serve_http(nursery, host, routes)` starts it and returns a `Site`: its port and every
request it saw (method, path, Host header), so a test can assert that a host was never
reached. A route is ``path -> (status, extra headers, body)``; any other path is 404.
"""

from __future__ import annotations

import functools

import attrs
import trio

Route = tuple[int, dict[str, str], bytes]


@attrs.define(eq=False)
class Site:
    host: str
    port: int
    seen: list[tuple[str, str, str]] = attrs.field(factory=list)  # (method, path, Host)
    connections: int = 0


async def serve_http(
    nursery: trio.Nursery, host: str, routes: dict[str, Route], *, port: int = 0
) -> Site:
    site = Site(host, 0)

    async def handle(stream: trio.SocketStream) -> None:
        site.connections += 1
        buffer = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in buffer and len(buffer) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                buffer += chunk
        lines = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, path, _ = ([*lines[0].split(" "), "", ""])[:3]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        site.seen.append((method, path, headers.get("Host", "")))
        status, extra, body = routes.get(path, (404, {}, b"not found"))
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in extra.items())
        try:
            await stream.send_all(head.encode() + b"\r\n" + body)
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, port, host=host))
    site.port = listeners[0].socket.getsockname()[1]
    return site


async def pair_on_one_port(
    nursery: trio.Nursery, first: str, second: str, routes: dict[str, Route]
) -> tuple[Site, Site]:
    """Two sites on the same port at two loopback addresses (a name rebinding from one to
    the other keeps its port); a few tries, in case the port is taken on the second."""
    for _ in range(20):
        one = await serve_http(nursery, first, routes)
        try:
            two = await serve_http(nursery, second, routes, port=one.port)
        except OSError:
            continue
        return one, two
    raise AssertionError("no port free on both addresses")
