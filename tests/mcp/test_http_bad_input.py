"""Bad input at the MCP endpoint: each gets the protocol's error, and the server carries on.

Each test sends the bad request raw (httpx), checks the status and error, and then
checks that a well-behaved MCP client (the SDK's) still gets its tool call served.
Auth failures are audited like the WebSocket handshake's.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from engine.audit import query
from tests.conftest import plain_http_tls
from tests.mcp.conftest import McpServer, mcp_client

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
ACCEPT = "application/json, text/event-stream"


async def _post(server: McpServer, body: bytes | str, *, token: str | None = "", headers: dict[str, str] | None = None,
                path: str = "/mcp") -> httpx.Response:
    sent = {"Content-Type": "application/json", "Accept": ACCEPT, **(headers or {})}
    if token == "":
        token = server.token()
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    url = server.mcp.rsplit("/mcp", 1)[0] + path
    async with httpx.AsyncClient(timeout=10, verify=plain_http_tls()) as http:
        return await http.post(url, content=body, headers=sent)


async def _still_serving(server: McpServer) -> None:
    async with mcp_client(server.mcp, server.token()) as client:
        assert not (await client.call_tool("calculator", {"expression": "3*3"})).is_error


def _error_of(response: httpx.Response) -> dict[str, Any]:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    return json.loads(text)["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("label", "token", "reason"), [
    ("missing", None, "missing"),
    ("garbage", "not-a-jwt", "malformed"),
])
async def test_a_missing_or_bad_token_is_401_with_a_reason_and_audited(
    mcp_server: McpServer, label: str, token: str | None, reason: str
) -> None:
    with trio.fail_after(30):
        response = await _post(mcp_server, json.dumps(INIT), token=token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert body["code"] == "unauthorized" and body["message"]
        await _still_serving(mcp_server)
    failures = [r for r in query(mcp_server.settings.state_dir, kind="auth_failure")]
    assert len(failures) == 1 and failures[0].to_dict()["details"]["transport"] == "mcp-http"
    assert failures[0].outcome == body["reason"]


async def test_an_expired_token_is_refused(mcp_server: McpServer) -> None:
    import time

    import jwt

    from tests.engine.conftest import SECRET

    expired = jwt.encode({"sub": "alice", "roles": ["user"], "exp": int(time.time()) - 60}, SECRET, "HS256")
    with trio.fail_after(30):
        response = await _post(mcp_server, json.dumps(INIT), token=expired)
    assert response.status_code == 401 and response.json()["reason"] == "expired"


async def test_a_token_accepted_before_is_refused_once_it_expires(mcp_server: McpServer) -> None:
    """Verified tokens are remembered between requests, but never past their exp."""
    import time

    import jwt

    from tests.engine.conftest import SECRET

    exp = int(time.time()) + 4  # room for the two requests below on a loaded machine
    token = jwt.encode({"sub": "alice", "roles": ["user"], "exp": exp}, SECRET, "HS256")
    with trio.fail_after(30):
        assert (await _post(mcp_server, json.dumps(INIT), token=token)).status_code == 200
        assert (await _post(mcp_server, json.dumps(INIT), token=token)).status_code == 200  # remembered
        await trio.sleep(max(0.0, exp - time.time()) + 0.05)  # the token's own clock: past its exp
        response = await _post(mcp_server, json.dumps(INIT), token=token)
    assert response.status_code == 401 and response.json()["reason"] == "expired"
    failures = [r for r in query(mcp_server.settings.state_dir, kind="auth_failure") if r.outcome == "expired"]
    assert len(failures) == 1


async def test_a_host_header_that_is_not_ours_is_refused(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        response = await _post(mcp_server, json.dumps(INIT), headers={"Host": "evil.example:80"})
        assert response.status_code in (400, 403, 421), response.text
        foreign_origin = await _post(mcp_server, json.dumps(INIT), headers={"Origin": "http://evil.example"})
        assert foreign_origin.status_code == 403, foreign_origin.text
        await _still_serving(mcp_server)


async def test_malformed_json_is_a_parse_error(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        response = await _post(mcp_server, b'{"jsonrpc": "2.0", "id": 1, "method": ')
        assert response.status_code == 400
        assert _error_of(response)["code"] == -32700
        not_rpc = await _post(mcp_server, json.dumps({"hello": "world"}))
        assert not_rpc.status_code == 400 and _error_of(not_rpc)["code"] in (-32600, -32602)
        await _still_serving(mcp_server)


async def test_an_unknown_method_is_method_not_found(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        init = await _post(mcp_server, json.dumps(INIT))
        session = init.headers["mcp-session-id"]
        headers = {"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
        await _post(mcp_server, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=headers)
        response = await _post(mcp_server, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/explode"}),
                               headers=headers)
        assert _error_of(response)["code"] == -32601
        await _still_serving(mcp_server)


async def test_an_oversized_body_is_413(start_mcp, config_dir) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(config_dir, max_frame_bytes=64 * 1024)
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "calculator",
                                                                         "arguments": {"expression": "1" * 100_000}}}
    with trio.fail_after(30):
        response = await _post(server, json.dumps(big))
        assert response.status_code == 413
        await _still_serving(server)


async def test_a_wrong_content_type_is_refused(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        response = await _post(mcp_server, json.dumps(INIT), headers={"Content-Type": "text/plain"})
        assert response.status_code in (400, 415), response.text
        await _still_serving(mcp_server)


async def test_another_path_is_404(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        response = await _post(mcp_server, json.dumps(INIT), path="/admin")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_a_session_belongs_to_the_subject_that_opened_it(mcp_server: McpServer) -> None:
    with trio.fail_after(30):
        init = await _post(mcp_server, json.dumps(INIT), token=mcp_server.token("alice"))
        session = init.headers["mcp-session-id"]
        headers = {"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
        stolen = await _post(mcp_server, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
                             token=mcp_server.token("mallory"), headers=headers)
    assert stolen.status_code == 404


async def test_the_anonymous_role_serves_callers_without_a_token_on_loopback(start_mcp, config_dir) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(config_dir, mcp_anonymous_role="user")
    with trio.fail_after(30):
        async with mcp_client(server.mcp, None) as client:
            assert not (await client.call_tool("calculator", {"expression": "1+2"})).is_error
        # A bad token is still refused: anonymity is for callers that present none.
        assert (await _post(server, json.dumps(INIT), token="bad")).status_code == 401
    [record] = [r for r in query(server.settings.state_dir, kind="execution")]
    assert record.subject == "anonymous"


async def test_the_anonymous_role_is_refused_on_a_public_address(nursery, state_dir, config_dir) -> None:  # type: ignore[no-untyped-def]
    from engine.mcp import serve_mcp
    from engine.server.hub import Hub

    hub: Any = object.__new__(Hub)  # serve_mcp refuses before it touches the hub
    with pytest.raises(ValueError, match="only on a loopback address"):
        await serve_mcp(hub, "0.0.0.0", 0, trio.Event(), anonymous_role="user")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_session_open_during_all_of_it_carries_on(mcp_server: McpServer, mode: str) -> None:
    """One well-behaved session stays open while every kind of bad request arrives; it is served after."""
    init = json.dumps(INIT)
    with trio.fail_after(60):
        async with mcp_client(mcp_server.mcp, mcp_server.token("bystander"), mode=mode) as bystander:
            assert not (await bystander.call_tool("calculator", {"expression": "1+1"})).is_error
            for body, options in [
                (init, {"token": None}),
                (init, {"token": "garbage"}),
                (init, {"headers": {"Host": "evil.example:80"}}),
                (init, {"headers": {"Content-Type": "text/plain"}}),
                ('{"jsonrpc": "2.0", "id": 1, "method": ', {}),
                (json.dumps({"jsonrpc": "2.0", "id": 3, "method": "nope/nope"}), {}),
                ("[" * 10_000 + "]" * 10_000, {}),
                ("x" * (2 * 2**20), {}),
            ]:
                response = await _post(mcp_server, body, **options)
                assert response.status_code >= 400 or "error" in response.text, (body[:40], response.status_code)
            result = await bystander.call_tool("calculator", {"expression": "2+2"})
            assert not result.is_error and result.structured_content["result"] == 4
