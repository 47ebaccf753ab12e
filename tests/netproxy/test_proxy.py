"""The egress proxy on its own (engine/netproxy/_proxy.py): a real Unix socket, real
loopback HTTP servers standing in for hosts, names mapped by the proxy's own hosts map.

Each test sends what a tool would send through its forwarder and checks the answer,
what the stand-in servers saw, and the one record each connection ends in.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from engine.netproxy import Allowlist, EgressRecord, HostsResolver, ProxyConfig, open_call_proxy
from tests.netproxy.httpd import Site, pair_on_one_port, serve_http

ROUTES = {"/hello": (200, {}, b"hello from the stand-in"), "/redirect": (302, {"Location": "http://evil.test/"}, b"")}


@asynccontextmanager
async def proxy(
    entries: list[Any], hosts: dict[str, Any], **config: Any
) -> AsyncIterator[tuple[str, list[EgressRecord]]]:
    records: list[EgressRecord] = []

    async def record(item: EgressRecord) -> None:
        records.append(item)

    settings = ProxyConfig(resolver=HostsResolver(hosts), **config)
    async with open_call_proxy(Allowlist.parse(entries), record, config=settings) as path:
        yield path, records


async def exchange(path: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the proxy closes it."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(data)
        chunks = []
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
async def site(nursery: trio.Nursery) -> Site:
    return await serve_http(nursery, "127.0.0.1", ROUTES)


def allowed(site: Site) -> dict[str, Any]:
    return {"host": "allowed.test", "port": site.port, "addresses": ["127.0.0.1"]}


async def test_an_allowed_name_is_relayed_and_counted(site: Site) -> None:
    with trio.fail_after(20):
        async with proxy([allowed(site)], {"allowed.test": ["127.0.0.1"]}) as (path, records):
            plain = await exchange(path, f"GET http://allowed.test:{site.port}/hello HTTP/1.1\r\nHost: x\r\n"
                                         "Proxy-Connection: keep-alive\r\n\r\n".encode())  # fmt: skip
            tunnel = await exchange(path, f"CONNECT allowed.test:{site.port} HTTP/1.1\r\n\r\n"
                                          "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n".encode())  # fmt: skip
            await wait_for(lambda: len(records) == 2)
    assert status_of(plain) == 200 and plain.endswith(b"hello from the stand-in")
    assert tunnel.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 ")
    # Plain HTTP goes out in origin form, with the URL's host and the proxy's headers gone.
    assert site.seen[0] == ("GET", "/hello", f"allowed.test:{site.port}")
    for record in records:
        assert (record.outcome, record.host, record.port, record.address) == ("allowed", "allowed.test", site.port,
                                                                              "127.0.0.1")  # fmt: skip
        assert record.bytes_up > 0 and record.bytes_down > 0
    assert records[0].bytes_down == len(plain)
    assert records[1].bytes_down == len(tunnel) - len(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert [r.method for r in records] == ["GET", "CONNECT"]


async def test_another_name_a_raw_address_and_an_unlisted_port_are_refused(site: Site) -> None:
    hosts = {"allowed.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    with trio.fail_after(20):
        async with proxy([allowed(site)], hosts) as (path, records):
            other = await exchange(path, f"CONNECT other.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            raw = await exchange(path, f"CONNECT 127.0.0.1:{site.port} HTTP/1.1\r\n\r\n".encode())
            mapped = await exchange(path, f"GET http://[::ffff:127.0.0.1]:{site.port}/hello HTTP/1.1\r\n\r\n".encode())
            port = await exchange(path, b"CONNECT allowed.test:22 HTTP/1.1\r\n\r\n")
            await wait_for(lambda: len(records) == 4)
    assert [status_of(answer) for answer in (other, raw, mapped, port)] == [403] * 4
    assert b"Proxy-Status: sconnect; error=http_request_denied" in other
    assert site.connections == 0
    assert [(r.outcome, r.host, r.address) for r in records] == [
        ("refused", "other.test", None), ("refused", "127.0.0.1", None), ("refused", "::ffff:127.0.0.1", None),
        ("refused", "allowed.test", None),
    ]  # fmt: skip
    assert records[0].reason == "other.test is not in the tool's network list"
    assert "a raw address needs an entry of its own" in records[1].reason
    assert records[3].reason == f"port 22 is not allowed for allowed.test (allowed: {site.port})"


async def test_names_reach_only_public_addresses_unless_the_entry_names_the_range(site: Site) -> None:
    hosts = {"plain.test": ["127.0.0.1"], "lan.test": ["10.1.2.3", "127.0.0.1"]}
    lan = {"host": "lan.test", "port": site.port, "addresses": ["10.0.0.0/8"]}
    entries: list[Any] = [f"plain.test:{site.port}", lan, f"127.0.0.1:{site.port}"]
    with trio.fail_after(20):
        async with proxy(entries, hosts, connect_timeout_s=0.5) as (path, records):
            loop = await exchange(path, f"CONNECT plain.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            # lan.test may reach 10/8 only: 127.0.0.1 is skipped; 10.1.2.3 is tried (and is not there).
            lan_answer = await exchange(path, f"CONNECT lan.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            # An address entry is explicit consent: the raw address is reached.
            raw = await exchange(path, f"GET http://127.0.0.1:{site.port}/hello HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 3)
    assert status_of(loop) == 403 and b"error=destination_ip_prohibited" in loop
    assert "resolves to 127.0.0.1: loopback, link-local and private addresses need an entry" in records[0].reason
    assert records[1].address == "10.1.2.3" and status_of(lan_answer) in (502, 504)
    assert records[1].outcome == "failed"
    assert status_of(raw) == 200 and records[2].outcome == "allowed"
    assert site.seen == [("GET", "/hello", f"127.0.0.1:{site.port}")]


async def test_the_checked_addresses_are_tried_in_turn(site: Site) -> None:
    # 127.0.0.3 is allowed but nothing listens there on this port: the next checked address is used.
    entry = {"host": "multi.test", "port": site.port, "addresses": ["127.0.0.0/8"]}
    with trio.fail_after(20):
        async with proxy([entry], {"multi.test": ["127.0.0.3", "10.0.0.1", "127.0.0.1"]}) as (path, records):
            answer = await exchange(path, f"GET http://multi.test:{site.port}/hello HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 1)
    assert status_of(answer) == 200
    assert (records[0].outcome, records[0].address) == ("allowed", "127.0.0.1")


async def test_a_rebinding_name_is_connected_to_the_address_that_was_checked(nursery: trio.Nursery) -> None:
    # 127.0.0.2 plays a public host (public_ranges); 127.0.0.1 is the victim on the same port.
    public, victim = await pair_on_one_port(nursery, "127.0.0.2", "127.0.0.1", ROUTES)
    resolver_map = {"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]}
    ranges = (ipaddress.ip_network("127.0.0.2/32"),)
    with trio.fail_after(20):
        async with proxy([f"rebind.test:{public.port}"], resolver_map, public_ranges=ranges) as (path, records):
            first = await exchange(path, f"GET http://rebind.test:{public.port}/hello HTTP/1.1\r\n\r\n".encode())
            second = await exchange(path, f"GET http://rebind.test:{public.port}/hello HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 2)
    # One lookup per connection: the first went where it was checked to go, the second was refused.
    assert status_of(first) == 200 and public.connections == 1
    assert status_of(second) == 403
    assert victim.connections == 0
    assert [(r.outcome, r.address) for r in records] == [("allowed", "127.0.0.2"), ("refused", None)]
    assert "resolves to 127.0.0.1" in records[1].reason


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\xffgarbage\r\n\r\n", 400, "the request is not ASCII"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, "malformed request line"),
        (b"HELLO\r\n\r\n", 400, "malformed request line"),
        (b"GET https://allowed.test/ HTTP/1.1\r\n\r\n", 400, "https:// URLs go through CONNECT"),
        (b"GET /relative HTTP/1.1\r\n\r\n", 400, "the request target must be an absolute http:// URL"),
        (b"CONNECT allowed.test HTTP/1.1\r\n\r\n", 400, "CONNECT needs host:port"),
        (b"CONNECT allowed.test:99999 HTTP/1.1\r\n\r\n", 400, "malformed host in the target"),
        (b"CONNECT user@allowed.test:443 HTTP/1.1\r\n\r\n", 400, "user information in the target is not accepted"),
        (b"CONNECT allowed.test:443 HTTP/1.1\r\nbad header\r\n\r\n", 400, "malformed header line"),
        (b"CONNECT allowed.test:443 HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 400, "more than 100 header lines"),
        (b"CONNECT allowed.test:443 HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431,
         "request head larger than 8192 bytes"),
        (b"CONNECT allowed.test:443 HTT", 400, "connection closed before a complete request"),
    ],
)
async def test_bad_requests_are_refused_and_recorded(site: Site, data: bytes, status: int, reason: str) -> None:
    with trio.fail_after(20):
        async with proxy([allowed(site)], {"allowed.test": ["127.0.0.1"]}) as (path, records):
            stream = await trio.open_unix_socket(path)
            async with stream:
                await stream.send_all(data)
                if data.endswith(b"HTT"):
                    await stream.send_eof()
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            await wait_for(lambda: len(records) == 1)
    assert status_of(answer) == status
    assert records[0].outcome == "refused" and records[0].reason == reason
    assert site.connections == 0


async def test_a_silent_client_is_cut_off_after_the_handshake_time(site: Site) -> None:
    with trio.fail_after(20):
        async with proxy([allowed(site)], {"allowed.test": ["127.0.0.1"]}, handshake_timeout_s=0.2) as (path, records):
            answer = await exchange(path, b"CONNECT allowed.test")
            await wait_for(lambda: len(records) == 1)
    assert status_of(answer) == 408 and records[0].reason == "no complete request within 0.2s"


async def test_an_idle_tunnel_is_closed_and_still_recorded(site: Site) -> None:
    echo_seen: list[bytes] = []

    async def silent(stream: trio.SocketStream) -> None:
        echo_seen.append(await stream.receive_some(100))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        entry = {"host": "idle.test", "port": port, "addresses": ["127.0.0.1"]}
        with trio.fail_after(20):
            async with proxy([entry], {"idle.test": ["127.0.0.1"]}, idle_timeout_s=0.3) as (path, records):
                answer = await exchange(path, f"CONNECT idle.test:{port} HTTP/1.1\r\n\r\nping".encode())
                await wait_for(lambda: len(records) == 1)
        nursery.cancel_scope.cancel()
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert echo_seen == [b"ping"]
    assert records[0].reason == "closed after 0.3s idle" and records[0].bytes_up == 4


async def test_connections_past_the_limit_are_refused(site: Site) -> None:
    with trio.fail_after(20):
        async with proxy([allowed(site)], {"allowed.test": ["127.0.0.1"]}, max_connections=2) as (path, records):
            held = [await trio.open_unix_socket(path) for _ in range(2)]
            for stream in held:
                await stream.send_all(b"CONNECT allowed.test")  # half a head: the slot stays taken
            answer = await exchange(path, f"CONNECT allowed.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 1)
            assert status_of(answer) == 503 and records[0].reason == "more than 2 connections at once"
            for stream in held:
                await stream.aclose()
            await wait_for(lambda: len(records) == 3)
            # The slots are free again.
            again = await exchange(path, f"CONNECT allowed.test:{site.port} HTTP/1.1\r\n\r\n"
                                         "GET /hello HTTP/1.1\r\n\r\n".encode())  # fmt: skip
    assert again.startswith(b"HTTP/1.1 200 Connection established")


async def test_a_name_that_does_not_resolve_fails_and_is_recorded(site: Site) -> None:
    with trio.fail_after(20):
        async with proxy([f"nowhere.test:{site.port}"], {}) as (path, records):
            answer = await exchange(path, f"CONNECT nowhere.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 1)
    assert status_of(answer) == 502 and b"error=dns_error" in answer
    assert records[0].outcome == "failed" and "not in the proxy's hosts map" in records[0].reason


async def test_closing_the_proxy_ends_open_tunnels_and_records_them(site: Site, nursery: trio.Nursery) -> None:
    received: list[bytes] = []

    async def silent(stream: trio.SocketStream) -> None:
        received.append(await stream.receive_some(100))
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    entry = {"host": "hold.test", "port": port, "addresses": ["127.0.0.1"]}
    with trio.fail_after(20):
        async with proxy([entry], {"hold.test": ["127.0.0.1"]}) as (path, records):
            stream = await trio.open_unix_socket(path)
            await stream.send_all(f"CONNECT hold.test:{port} HTTP/1.1\r\n\r\nabc".encode())
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 200")
            await wait_for(lambda: received == [b"abc"])
        # The call ended: the tunnel is closed and its record was delivered on the way out.
        assert await stream.receive_some(100) == b""
        await stream.aclose()
    assert [(r.outcome, r.bytes_up) for r in records] == [("allowed", 3)]


class _BrokenResolver:
    """A resolver plug-in that fails in a way the proxy does not expect."""

    async def resolve(self, host: str, port: int) -> tuple[Any, ...]:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("resolver bug")


async def test_an_unexpected_error_fails_one_connection_not_the_proxy(site: Site) -> None:
    records: list[EgressRecord] = []

    async def record(item: EgressRecord) -> None:
        records.append(item)

    allow = Allowlist.parse([f"broken.test:{site.port}", allowed(site)])
    config = ProxyConfig(resolver=_BrokenResolver())
    with trio.fail_after(20):
        async with open_call_proxy(allow, record, config=config) as path:
            answer = await exchange(path, f"CONNECT broken.test:{site.port} HTTP/1.1\r\n\r\n".encode())
            again = await exchange(path, f"CONNECT 127.0.0.1:{site.port} HTTP/1.1\r\n\r\n".encode())
            await wait_for(lambda: len(records) == 2)
    assert status_of(answer) == 502 and b"error=proxy_internal_error" in answer
    assert records[0].outcome == "failed" and records[0].reason == "internal error: RuntimeError"
    assert status_of(again) == 403  # still serving


async def test_control_characters_in_the_host_are_refused(site: Site) -> None:
    with trio.fail_after(20):
        async with proxy([allowed(site)], {"allowed.test": ["127.0.0.1"]}) as (path, records):
            answer = await exchange(path, b"CONNECT allowed.test\nX-Injected:1:443 HTTP/1.1\r\n\r\n")
            await wait_for(lambda: len(records) == 1)
    assert status_of(answer) == 400 and records[0].reason == "malformed host in the target"
    assert b"\nX-Injected" not in answer
