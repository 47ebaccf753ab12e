"""The console's HTTP side against a real server, with a real HTTP client (no browser).

Sign-in exchanges a token for a cookie naming a server-side session (never the JWT), and
refuses what it must: a bad token (401, a clear message, an audit record), a POST without
its CSRF token or from another origin (403), a used one-time code (401); the JSON
endpoints need the cookie (401) and the audit role (403); the WebSocket needs the cookie
and the console's own Origin; every response carries the Content-Security-Policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from engine.audit import query
from engine.auth import issue
from engine.console._app import CSRF_COOKIE, SESSION_COOKIE
from tests.conftest import plain_http_tls

from .conftest import Console, sign_in


def client(console: Console) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=console.url.rstrip("/"), timeout=10, verify=plain_http_tls())


async def test_page_and_files_carry_a_strict_csp(console: Console) -> None:
    async with client(console) as http:
        page = await http.get("/")
        script = await http.get("/static/app.js")
        missing = await http.get("/static/../_app.py")
    assert page.status_code == 200 and "<script type=\"module\" src=\"/static/app.js\">" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404


async def test_sign_in_sets_an_opaque_httponly_strict_cookie(console: Console) -> None:
    token = console.token("alice")
    async with client(console) as http:
        me = await sign_in(http, token)
        cookie = next(c for c in http.cookies.jar if c.name == SESSION_COOKIE)
        forged = (await http.post("/api/signout")).status_code  # a cross-site form could send no header
        still = (await http.get("/api/me")).status_code
        raw = (await http.post("/api/signout", headers={"X-CSRF-Token": me["csrf"]})).status_code
        after = await http.get("/api/me")
    assert me["sub"] == "alice" and me["roles"] == ["user"]
    assert cookie.value is not None and token not in cookie.value and len(cookie.value) >= 40
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Strict"
    assert not cookie.secure  # plain http on loopback; under TLS the cookie is Secure (test_tls_cookie_is_secure)
    assert (forged, still) == (403, 200)
    assert raw == 200 and after.status_code == 401


async def test_bad_token_is_refused_with_a_message_and_audited(console: Console) -> None:
    async with client(console) as http:
        csrf = (await http.get("/api/csrf")).json()["csrf"]
        response = await http.post("/api/signin", data={"token": "not.a.jwt"}, headers={"X-CSRF-Token": csrf})
        old = issue(console.settings.auth, "alice", ["user"], 10, now=time.time() - 60)
        expired = await http.post("/api/signin", data={"token": old}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 401 and response.json()["message"].startswith("sign-in refused:")
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    # Committed before the refusal was sent.
    records = query(console.settings.state_dir, kind="auth_failure")
    assert len(records) == 2
    assert {json.loads(r.details)["path"] for r in records} == {"/api/signin"}


@pytest.mark.parametrize("attack", ["no_header", "wrong_header", "no_cookie", "cross_site", "cross_origin"])
async def test_sign_in_without_its_csrf_token_is_403(console: Console, attack: str) -> None:
    async with client(console) as http:
        csrf = (await http.get("/api/csrf")).json()["csrf"]
        headers = {"X-CSRF-Token": csrf}
        if attack == "no_header":
            headers = {}
        elif attack == "wrong_header":
            headers = {"X-CSRF-Token": csrf[::-1]}
        elif attack == "no_cookie":
            http.cookies.delete(CSRF_COOKIE)
        elif attack == "cross_site":
            headers["Sec-Fetch-Site"] = "cross-site"
        else:
            headers["Origin"] = "http://evil.example"
        response = await http.post("/api/signin", data={"token": console.token()}, headers=headers)
    assert response.status_code == 403, response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_one_time_code_signs_in_once(console: Console) -> None:
    code = console.link("root-admin", ("admin", "user")).split("#code=", 1)[1]
    async with client(console) as first, client(console) as second:
        for http in (first, second):
            csrf = (await http.get("/api/csrf")).json()["csrf"]
            http.headers["X-CSRF-Token"] = csrf
        used = await first.post("/api/signin", data={"code": code})
        again = await second.post("/api/signin", data={"code": code})
        guessed = await second.post("/api/signin", data={"code": "x" * len(code)})
        me = (await first.get("/api/me")).json()
    assert used.status_code == 200 and me["sub"] == "root-admin"
    assert again.status_code == 401 and "used already" in again.json()["message"]
    assert guessed.status_code == 401


async def test_endpoints_need_the_cookie_and_the_audit_role(console: Console) -> None:
    async with client(console) as anonymous, client(console) as alice, client(console) as auditor:
        for path in ("/api/me", "/api/agents", "/api/sessions", "/api/audit", "/api/audit/verify",
                     "/api/approvals/decided", "/api/policy/matrix"):
            assert (await anonymous.get(path)).status_code == 401, path
        await sign_in(alice, console.token("alice"))
        await sign_in(auditor, console.token("carol", ("auditor",)))
        assert (await alice.get("/api/audit")).status_code == 403
        assert (await alice.get("/api/audit/verify")).status_code == 403
        assert (await alice.get("/api/approvals/decided")).status_code == 403
        assert (await auditor.get("/api/approvals/decided")).status_code == 403  # auditors read, never approve
        anonymous.cookies.set(SESSION_COOKIE, "guessed-session-id")
        forged = await anonymous.get("/api/me")
        records = await auditor.get("/api/audit", params={"kind": "decision"})
        bad_kind = await auditor.get("/api/audit", params={"kind": "nonsense"})
        report = await auditor.get("/api/audit/verify")
        agents = (await alice.get("/api/agents")).json()["agents"]
    assert forged.status_code == 401
    assert records.status_code == 200 and records.json()["records"] == []
    assert bad_kind.status_code == 400 and "kind must be one of" in bad_kind.json()["message"]
    assert report.status_code == 200 and report.json()["ok"] is True
    assert "assistant" in {a["name"] for a in agents}


async def test_a_foreign_host_header_is_refused(console: Console) -> None:
    async with client(console) as http:
        response = await http.get("/", headers={"Host": "evil.example"})
    assert response.status_code == 421


async def test_websocket_needs_the_cookie_and_the_console_origin(console: Console) -> None:
    ws_url = console.url.replace("http://", "ws://") + "ws"
    origin = console.url.rstrip("/")
    async with client(console) as http:
        await sign_in(http, console.token("alice"))
        cookie = f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"
    refused = [
        [("Origin", origin)],  # no cookie
        [("Origin", "http://evil.example"), ("Cookie", cookie)],  # another site's page
        [("Cookie", cookie)],  # no Origin: not a page of the console
    ]
    for headers in refused:
        with pytest.raises(ConnectionRejected) as caught:
            async with open_websocket_url(ws_url, extra_headers=[(k.encode(), v.encode()) for k, v in headers]):
                pass
        assert caught.value.status_code == 403
    with trio.fail_after(10):
        async with open_websocket_url(ws_url, extra_headers=[(b"Origin", origin.encode()),
                                                             (b"Cookie", cookie.encode())]) as ws:
            await ws.send_message(json.dumps({"type": "agent_connect", "id": "c1", "payload": {"agent": "assistant"}}))
            while (frame := json.loads(await ws.get_message()))["type"] != "agent_state":
                pass
    assert frame["payload"]["reply_to"] == "c1" and frame["payload"]["agent"] == "assistant"


async def test_policy_questions_need_the_role_and_name_what_they_do_not_know(console: Console) -> None:
    async with client(console) as alice, client(console) as auditor:
        await sign_in(alice, console.token("alice"))
        await sign_in(auditor, console.token("carol", ("auditor",)))
        refused = await alice.get("/api/policy/matrix")
        explained = (await auditor.get("/api/policy/explain", params={
            "subject": "alice", "roles": "user", "target": "read_file", "arguments": '{"path": "notes.txt"}'})).json()
        who = (await auditor.get("/api/policy/who-can", params={"target": "db://users/profile/7"})).json()
        unknown = await auditor.get("/api/policy/explain", params={"target": "nosuchtool", "roles": "user"})
        bad_args = await auditor.get("/api/policy/explain", params={"target": "read_file", "arguments": "[1"})
        matrix = (await auditor.get("/api/policy/matrix")).json()
    assert refused.status_code == 403
    assert explained["decision"]["effect"] == "require_approval" and explained["decision"]["approver"] == "user"
    assert explained["request"]["arguments"] == {"path": "notes.txt"}
    # A user's approval may be remembered up to the default bound (no rule sets one here): 8h.
    assert explained["remember"]["allowed"] and explained["remember"]["max_s"] == 8 * 3600
    assert [c["id"] for c in explained["considered"] if c["matched"]] == ["tools-up-to-level-2"]
    assert who["target"] == "db://users/**" and {s["subject"] for s in who["subjects"]} == {"admin", "user"}
    assert unknown.status_code == 400 and "unknown tool 'nosuchtool'" in unknown.json()["message"]
    assert bad_args.status_code == 400 and "not JSON" in bad_args.json()["message"]
    send_payment = next(r for r in matrix["rows"] if r["target"] == "send_payment")
    assert send_payment["cells"]["user"]["label"] == "deny"
    assert matrix["policy_revision"].startswith("sha256:") and matrix["reload_errors"] == []


async def test_signing_out_ends_the_pages_websocket(console: Console) -> None:
    ws_url = console.url.replace("http://", "ws://") + "ws"
    origin = console.url.rstrip("/")
    async with client(console) as http:
        me = await sign_in(http, console.token("alice"))
        cookie = f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"
        with trio.fail_after(10):
            async with open_websocket_url(ws_url, extra_headers=[(b"Origin", origin.encode()),
                                                                 (b"Cookie", cookie.encode())]) as ws:
                assert json.loads(await ws.get_message())["type"] == "tool_list"
                assert (await http.post("/api/signout", headers={"X-CSRF-Token": me["csrf"]})).status_code == 200
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
                assert ws.closed is not None and ws.closed.code == 4001


async def test_console_websockets_count_against_the_connection_limits(
    start_console: Any, config_dir: Path, state_dir: Path,
) -> None:
    console: Console = await start_console(config_dir, state_dir, max_connections_per_subject=1)
    ws_url = console.url.replace("http://", "ws://") + "ws"
    async with client(console) as http:
        await sign_in(http, console.token("alice"))
        headers = [(b"Origin", console.url.rstrip("/").encode()),
                   (b"Cookie", f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}".encode())]
    with trio.fail_after(15):
        async with open_websocket_url(ws_url, extra_headers=headers) as first:
            assert json.loads(await first.get_message())["type"] == "tool_list"
            with pytest.raises(ConnectionRejected) as caught:
                async with open_websocket_url(ws_url, extra_headers=headers):
                    pass
            assert caught.value.status_code == 403
        # The slot is given back when the page leaves.
        for _ in range(200):
            try:
                async with open_websocket_url(ws_url, extra_headers=headers) as again:
                    assert json.loads(await again.get_message())["type"] == "tool_list"
                    break
            except ConnectionRejected:
                await trio.sleep(0.05)  # the first connection's slot is released as its handler ends
        else:
            raise AssertionError("the console never gave the connection slot back")


async def test_audit_time_filters(console: Console) -> None:
    async with client(console) as http:
        await sign_in(http, console.token("root-admin", ("admin",)))
        await http.post("/api/signin", data={"token": "bad"}, headers={"X-CSRF-Token": "x"})  # 403, no record
        csrf = (await http.get("/api/csrf")).json()["csrf"]
        await http.post("/api/signin", data={"token": "bad"}, headers={"X-CSRF-Token": csrf})
        recent = (await http.get("/api/audit", params={"since": "1h", "kind": "auth_failure"})).json()
        future = (await http.get("/api/audit", params={"since": "2999-01-01T00:00:00"})).json()
        bad = await http.get("/api/audit", params={"since": "last tuesday"})
        limit = await http.get("/api/audit", params={"limit": "many"})
    assert [r["kind"] for r in recent["records"]] == ["auth_failure"]
    assert future["records"] == []
    assert bad.status_code == 400 and limit.status_code == 400
