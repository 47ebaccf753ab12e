"""engine.client against real servers: named connection failures (TLS, timeouts, refusals) and keepalive."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketRequest, serve_websocket

from engine.auth import issue
from engine.client import CannotConnect, ClientClosed, ConnectTimeout, Refused, TLSFailed, TokenRefused, open_client
from tests.engine.conftest import RunningServer
from tests.engine.tls import self_signed

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.fixture
async def tls_server(
    start_server: Callable[..., object], config_dir: Path, tmp_path: Path
) -> tuple[RunningServer, Path]:
    cert, key = self_signed(tmp_path)
    server = await start_server(config_dir, tls_cert=cert, tls_key=key)  # type: ignore[operator]
    return server, cert  # type: ignore[return-value]


async def test_wss_with_a_self_signed_certificate_names_the_tls_failure(tls_server: tuple[RunningServer, Path]) -> None:
    server, cert = tls_server
    assert server.url.startswith("wss://127.0.0.1:")
    with trio.fail_after(5):  # well under the 10 s connect timeout: the failure is reported, not waited out
        with pytest.raises(TLSFailed) as untrusted:
            async with open_client(server.url, server.token()):
                pass
    assert "certificate verify failed" in untrusted.value.reason and "--cacert" in untrusted.value.reason
    assert str(untrusted.value).startswith(f"cannot reach {server.url}: TLS: certificate verify failed")
    # The same certificate for another host name: a mismatch, named as such.
    other = server.url.replace("127.0.0.1", "localhost")
    with trio.fail_after(5), pytest.raises(TLSFailed) as mismatch:
        async with open_client(other, server.token(), cacert=str(cert)):
            pass
    assert "not for this host name" in mismatch.value.reason
    with trio.fail_after(10):
        async with open_client(server.url, server.token(), cacert=str(cert)) as client:
            assert str((await client.start_session("assistant")).state) == "active"


async def test_wss_to_a_plain_server_says_it_does_not_speak_tls(server: RunningServer) -> None:
    with trio.fail_after(5), pytest.raises(TLSFailed) as caught:
        async with open_client(server.url.replace("ws://", "wss://"), server.token()):
            pass
    assert "does not speak TLS" in caught.value.reason


async def test_a_missing_ca_file_is_named(server: RunningServer, tmp_path: Path) -> None:
    with pytest.raises(CannotConnect) as caught:
        async with open_client(server.url.replace("ws://", "wss://"), server.token(), cacert=str(tmp_path / "no.pem")):
            pass
    assert "cannot load the CA certificate" in caught.value.reason


async def test_refused_connection_and_timeout_are_named() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with trio.fail_after(5), pytest.raises(CannotConnect) as refused:
            async with open_client(f"ws://127.0.0.1:{port}/ws", "t"):
                pass
        assert "refused" in refused.value.reason.lower()
        sock.listen(1)  # listening, never accepted by anyone: the handshake gets no answer
        with trio.fail_after(5), pytest.raises(ConnectTimeout) as silent:
            async with open_client(f"ws://127.0.0.1:{port}/ws", "t", connect_timeout_s=0.5):
                pass
        assert silent.value.reason == "no answer within 0.5s (in the WebSocket handshake; is it a wss:// server?)"


async def test_a_refused_token_raises_a_typed_error_with_the_servers_reason(server: RunningServer) -> None:
    with trio.fail_after(10):
        with pytest.raises(TokenRefused) as expired:
            stale = issue(server.settings.auth, "alice", ["user"], 60, now=time.time() - 120)
            async with open_client(server.url, stale):
                pass
        assert expired.value.status_code == 401 and "expired" in expired.value.reason
        assert isinstance(expired.value, ConnectionRejected)  # what older callers catch
        with pytest.raises(TokenRefused) as garbage:
            async with open_client(server.url, "not-a-jwt"):
                pass
        assert garbage.value.reason and garbage.value.reason != expired.value.reason
        with pytest.raises(Refused) as wrong_path:
            async with open_client(server.url.rsplit("/", 1)[0] + "/nope", server.token()):
                pass
        assert wrong_path.value.status_code == 404 and not isinstance(wrong_path.value, TokenRefused)
        assert "/ws" in wrong_path.value.reason


async def test_keepalive_ends_a_connection_whose_peer_stopped_answering(nursery: trio.Nursery) -> None:
    """A peer that accepted, then never reads again: trio-websocket stops answering its pings once
    its one-message queue is full. The client's keepalive notices and ends the connection."""
    stalled = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        await request.accept()
        await stalled.wait()

    listener = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_client(f"ws://127.0.0.1:{listener.port}/", None, keepalive_s=0.3) as client:
            for _ in range(3):  # fill the peer's queue: its reader task blocks, pongs stop
                await client.send_raw("{}")
            with pytest.raises(ClientClosed):
                while True:
                    await client.next_event()
            assert client.lost_reason == "the server did not answer a ping within 0.3s"
            assert client.close_reason == client.lost_reason
    stalled.set()


async def test_keepalive_keeps_a_live_connection(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server.url, server.token(), keepalive_s=0.05) as client:
            sid = (await client.start_session("assistant")).session_id
            for _ in range(3):
                assert (await client.converse(sid, "what is 1+1")).response.content == "1+1 = 2"
            assert client.lost_reason is None and not client.closed


async def test_ws_to_a_tls_server_is_named(tls_server: tuple[RunningServer, Path]) -> None:
    server, _cert = tls_server
    with trio.fail_after(10), pytest.raises(CannotConnect) as caught:
        async with open_client(server.url.replace("wss://", "ws://"), server.token(), connect_timeout_s=3):
            pass
    assert "wss://" in caught.value.reason, caught.value.reason
