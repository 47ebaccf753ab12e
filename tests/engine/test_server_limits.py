"""Limits and backpressure: floods, slow readers, idle and counted connections, TLS."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from engine.client import open_client
from engine.protocol import ErrorFrame
from tests.engine.conftest import RunningServer
from tests.engine.tls import self_signed


async def test_a_frame_flood_is_rate_limited_then_closed(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, frames_per_second=10, frame_burst=5, flood_close_s=0.5)
    with trio.fail_after(10):
        async with open_client(server.url, server.token()) as client:
            codes = []
            # Offers get no answer, so no token comes back: only the time refill (10/s) lets frames in.
            for index in range(2000):
                try:
                    offer = {"type": "tool_list", "id": f"f{index}", "payload": {"tools": []}}
                    await client.send_raw(json.dumps(offer))
                except Exception:
                    break
                await trio.sleep(0.001)
            while True:
                try:
                    event = await client.next_event()
                except Exception:
                    break
                if isinstance(event, ErrorFrame):
                    codes.append(str(event.code))
            assert "rate_limited" in codes
            assert client.ws.closed is not None and client.ws.closed.code == 1008


async def test_a_client_that_never_reads_does_not_stall_another(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(
        config_dir, frames_per_second=100_000, frame_burst=100_000, send_queue_frames=64, send_timeout_s=2
    )
    request = json.dumps({"type": "tool_list", "id": "x", "payload": {}})
    with trio.fail_after(30):
        async with open_websocket_url(
            server.url, extra_headers=[("Authorization", f"Bearer {server.token('slow')}")]
        ) as slow:
            # Ask for far more than the socket and the queue can hold, and never read:
            # the server cuts this client off instead of letting it hold anything up.
            with pytest.raises(ConnectionClosed):
                for _ in range(20000):
                    await slow.send_message(request)
            async with open_client(server.url, server.token("fast")) as fast:
                sid = (await fast.start_session("assistant")).session_id
                with trio.fail_after(5):
                    turn = await fast.converse(sid, "what is 2*21")
                assert turn.response.content == "2*21 = 42"
            with trio.fail_after(10):
                while slow.closed is None:  # noqa: ASYNC110 (bounded poll)
                    await trio.sleep(0.05)


async def test_1000_idle_connections_at_once(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir)
    opened = 0
    release = trio.Event()

    async def hold(index: int) -> None:
        nonlocal opened
        headers = [("Authorization", f"Bearer {server.token(f'idle-{index % 50}', ttl_s=600)}")]
        async with open_websocket_url(server.url, extra_headers=headers):
            opened += 1
            await release.wait()

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for index in range(1000):
                nursery.start_soon(hold, index)
            while opened < 1000:  # noqa: ASYNC110 (bounded poll)
                await trio.sleep(0.05)
            async with open_client(server.url, server.token("probe")) as probe:
                sid = (await probe.start_session("assistant")).session_id
                assert (await probe.converse(sid, "hello")).response.content.startswith("Hello")
            release.set()


async def test_connection_limits(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, max_connections=3, max_connections_per_subject=2)
    with trio.fail_after(10):
        async with open_client(server.url, server.token("a")), open_client(server.url, server.token("a")):
            with pytest.raises(ConnectionRejected) as per_subject:
                async with open_client(server.url, server.token("a")):
                    pass
            assert per_subject.value.status_code == 429
            async with open_client(server.url, server.token("b")):
                with pytest.raises(ConnectionRejected) as overall:
                    async with open_client(server.url, server.token("c")):
                        pass
                assert overall.value.status_code == 503


async def test_an_idle_client_is_disconnected(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, idle_timeout_s=0.5)
    with trio.fail_after(10):
        async with open_client(server.url, server.token()) as client:
            while not client.closed:
                try:
                    await client.next_event()
                except Exception:
                    break
            assert client.ws.closed is not None and client.ws.closed.code == 4002


async def test_tls(start_server, config_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = self_signed(tmp_path)
    server: RunningServer = await start_server(config_dir, tls_cert=cert, tls_key=key)
    assert server.url.startswith("wss://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with trio.fail_after(10):
        async with open_websocket_url(
            server.url, ssl_context=context, extra_headers=[("Authorization", f"Bearer {server.token()}")]
        ) as ws:
            first = json.loads(await ws.get_message())
            assert first["type"] == "tool_list"
        # A client that does not trust the certificate cannot connect.
        port = int(server.url.split(":")[2].split("/")[0])
        with pytest.raises(trio.BrokenResourceError) as refused:
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=ssl.create_default_context())
            await stream.do_handshake()
        assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)


async def test_a_client_answering_pings_is_not_idle(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Sends nothing after the handshake but answers every ping: still connected after
    several idle periods (counted in pings seen, 15 pings = 3 idle timeouts)."""
    import wsproto
    from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

    server: RunningServer = await start_server(config_dir, idle_timeout_s=1.0, ping_interval_s=0.2, ping_timeout_s=5.0)
    host_port, path = server.url.removeprefix("ws://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            headers = [(b"authorization", f"Bearer {server.token()}".encode())]
            await stream.send_all(ws.send(Request(host=host_port, target="/" + path, extra_headers=headers)))
            accepted, pings = False, 0
            while pings < 15:
                data = await stream.receive_some(65536)
                assert data, "the server closed the connection"
                ws.receive_data(data)
                for event in ws.events():
                    assert not isinstance(event, CloseConnection), f"closed: {event.code} {event.reason}"
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, Ping):
                        await stream.send_all(ws.send(event.response()))
                        pings += 1
            assert accepted


async def test_a_sequential_client_is_never_throttled(server: RunningServer) -> None:
    """Default limits; 600 requests, each sent when the previous one is answered (faster
    than the 50 frames/s refill): every one is answered, none is rate limited."""
    with trio.fail_after(60):
        async with open_client(server.url, server.token()) as client:
            for index in range(600):
                frame_id = f"seq-{index}"
                await client.send_raw(json.dumps({"type": "tool_list", "id": frame_id, "payload": {}}))
                async for event in client.events():
                    assert not isinstance(event, ErrorFrame), event
                    if getattr(event, "reply_to", None) == frame_id:
                        break


async def test_a_chat_that_waits_for_each_answer_is_never_throttled(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A bucket of 5 refilled at 1 frame/s; 40 turns, each message sent when the turn
    before has answered: each turn's agent_response gives its message's token back
    (it used to come back only with time, so the sixth quick turn was rate limited)."""
    server: RunningServer = await start_server(config_dir, frames_per_second=1, frame_burst=5)
    with trio.fail_after(60):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            for _ in range(40):
                turn = await client.converse(sid, "hello")
                assert turn.response.content.startswith("Hello")


async def test_a_flooder_that_does_not_read_gets_rate_limited_first(server: RunningServer) -> None:
    """Default limits; 400 requests sent without reading a byte, then reading: the client
    finds a `rate_limited` notice in what it reads (it used to be cut off, its queue full of
    replies and errors, before the notice could be sent)."""
    request = json.dumps({"type": "tool_list", "payload": {}, "id": "flood"})
    with trio.fail_after(60):
        async with open_websocket_url(server.url, extra_headers=[("Authorization", f"Bearer {server.token()}")]) as ws:
            for _ in range(400):
                await ws.send_message(request)
            codes = []
            while "rate_limited" not in codes:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "error":
                    codes.append(frame["payload"]["code"])
            assert codes == ["rate_limited"]
