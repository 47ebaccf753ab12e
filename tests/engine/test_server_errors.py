"""Bad input at every layer: refused tokens at the handshake, bad frames on an open connection.

Each bad frame gets its own error code with ``reply_to``, and the connection,
its other sessions and other connections carry on.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from engine.auth import AuthSettings
from engine.client import open_client
from engine.protocol import ErrorFrame
from tests.engine.conftest import SECRET, RunningServer


async def _rejected(url: str, headers: list[tuple[str, str]]) -> ConnectionRejected:
    with trio.fail_after(5):
        with pytest.raises(ConnectionRejected) as caught:
            async with open_websocket_url(url, extra_headers=headers):
                pass
    return caught.value


def _token(claims: dict, key: object = SECRET, alg: str = "HS256") -> str:  # type: ignore[type-arg]
    base = {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 600}
    return jwt.encode({**base, **claims}, key, algorithm=alg)  # type: ignore[arg-type]


def _unsigned(claims: dict) -> str:  # type: ignore[type-arg]
    header = {"alg": "none", "typ": "JWT"}
    body = {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 600, **claims}
    encode = lambda part: jwt.utils.base64url_encode(json.dumps(part).encode()).decode()  # noqa: E731
    return f"{encode(header)}.{encode(body)}."


@pytest.mark.parametrize(
    ("label", "token"),
    [
        ("missing", None),
        ("malformed", "not-a-jwt"),
        ("expired", _token({"exp": int(time.time()) - 60})),
        ("not yet valid", _token({"nbf": int(time.time()) + 3600})),
        ("wrong signature", _token({}, key=b"another-secret-that-is-long-enough-000")),
        ("alg none", _unsigned({})),
        ("algorithm outside the allowlist", _token({}, alg="HS512")),
        ("no exp", jwt.encode({"sub": "alice", "roles": ["user"]}, SECRET, algorithm="HS256")),
        ("roles not a list", _token({"roles": "admin"})),
    ],
)
async def test_bad_tokens_are_refused_with_401(server: RunningServer, label: str, token: str | None) -> None:
    headers = [("Authorization", f"Bearer {token}")] if token else []
    rejected = await _rejected(server.url, headers)
    assert rejected.status_code == 401, label
    body = json.loads(rejected.body)
    assert body["code"] == "unauthorized"
    assert token is None or token not in rejected.body.decode()


async def test_token_in_query_parameter_is_accepted(server: RunningServer) -> None:
    async with open_client(server.url, server.token(), in_query=True) as client:
        assert (await client.list_tools()).tools


async def test_wrong_path_is_404(server: RunningServer) -> None:
    rejected = await _rejected(server.url.replace("/ws", "/other"), [("Authorization", f"Bearer {server.token()}")])
    assert rejected.status_code == 404


async def test_audience_and_issuer_when_configured(start_server, config_dir) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(config_dir, auth=AuthSettings(secret=SECRET, audience="sconnect", issuer="https://id.example"))
    good = _token({"aud": "sconnect", "iss": "https://id.example"})
    async with open_client(server.url, good) as client:
        assert (await client.list_tools()).tools
    for claims in (
        {"aud": "other", "iss": "https://id.example"},
        {"aud": "sconnect", "iss": "https://evil.example"},
        {},
    ):
        rejected = await _rejected(server.url, [("Authorization", f"Bearer {_token(claims)}")])
        assert rejected.status_code == 401


async def test_rejected_handshake_frees_its_socket(server: RunningServer) -> None:
    """The server closes a refused connection itself instead of waiting for the client."""
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        while True:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break  # the server closed the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 401")


BAD_FRAMES = [
    ("{not json", "bad_json", None),
    ("[1, 2]", "invalid_message", None),
    ('"just a string"', "invalid_message", None),
    ('{"type": "teleport", "id": "f1", "payload": {}}', "unknown_type", "f1"),
    ('{"type": "user_message", "id": "f2", "payload": {"session_id": "x"}}', "invalid_message", "f2"),
    ('{"type": "user_message", "id": "f3", "payload": {"session_id": 5, "content": "hi"}}', "invalid_message", "f3"),
    (
        '{"type": "response_token", "id": "f4", "payload": {"session_id": "s", "turn_id": "t", "token": "x"}}',
        "invalid_message",
        "f4",
    ),
    ('{"type": "user_message", "id": "f5", "payload": {"session_id": "nope", "content": "hi"}}', "not_found", "f5"),
    ('{"type": "action_approval", "id": "f6", "payload": {"action_id": "nope", "approved": true}}', "not_found", "f6"),
    ('{"type": "agent_control", "id": "f7", "payload": {"session_id": "nope", "command": "pause"}}', "not_found", "f7"),
    (
        '{"type": "agent_control", "id": "f8", "payload": {"session_id": "s", "command": "explode"}}',
        "invalid_message",
        "f8",
    ),
    ('{"type": "agent_connect", "id": "f9", "payload": {"agent": "nobody"}}', "not_found", "f9"),
]


async def test_each_bad_frame_gets_its_code_and_the_other_session_carries_on(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with (
            open_client(server.url, server.token()) as client,
            open_client(server.url, server.token("bob")) as other,
        ):
            sid = (await client.start_session("assistant")).session_id
            for text, code, reply_to in BAD_FRAMES:
                await client.send_raw(text)
                event = await client.next_event_of(ErrorFrame)
                assert (str(event.code), event.reply_to) == (code, reply_to), text
            await client.send_raw(b'{"type": "tool_list", "id": "b1", "payload": {}}')
            event = await client.next_event_of(ErrorFrame)
            assert str(event.code) == "bad_json" and "binary frames" in event.message
            # An illegal lifecycle transition is refused too.
            await client.send_raw(
                json.dumps({"type": "agent_control", "id": "r1", "payload": {"session_id": sid, "command": "resume"}})
            )
            event = await client.next_event_of(ErrorFrame)
            assert (str(event.code), event.reply_to) == ("invalid_state", "r1")
            # The same connection's session still works, and so does another connection.
            assert (await client.converse(sid, "what is 3*3")).response.content == "3*3 = 9"
            other_sid = (await other.start_session("assistant")).session_id
            assert (await other.converse(other_sid, "what is 4*4")).response.content == "4*4 = 16"
            # Another subject's session is not yours.
            await other.send_raw(
                json.dumps({"type": "user_message", "id": "x1", "payload": {"session_id": sid, "content": "hi"}})
            )
            event = await other.next_event_of(ErrorFrame)
            assert str(event.code) == "forbidden"


async def test_oversized_frame_closes_with_1009(start_server, config_dir) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(config_dir, max_frame_bytes=1024)
    with trio.fail_after(10):
        async with open_client(server.url, server.token()) as client:
            await client.send_raw(json.dumps({"type": "tool_list", "id": "big", "payload": {}, "pad": "x" * 4096}))
            while not client.closed:
                try:
                    await client.next_event()
                except Exception:
                    break
            assert client.ws.closed is not None and client.ws.closed.code == 1009
