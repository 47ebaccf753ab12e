"""Console sign-ins live in the state store (issue 16): they survive a restart and serve
any instance sharing the database; only a hash of each cookie is kept. On SQLite (the
state dir's database) and on PostgreSQL (``database_url``), each test:

- test_a_session_survives_a_restart_and_sign_out_revokes_it: alice signs in over HTTP;
  the server stops and a new one starts on the same state; her cookie still answers
  /api/me (same CSRF token); she signs out, and the cookie is refused (401), also by
  the page's WebSocket;
- test_forged_and_expired_cookies_are_refused: a made-up cookie, and a real one whose
  row is set to have expired, both get 401; the next sign-in sweeps the expired row;
- test_the_database_holds_no_cookie: the stored row holds the SHA-256 of the cookie and
  its value appears nowhere in the database;
- test_a_sign_out_elsewhere_ends_the_pages_websocket: the session's row is revoked
  behind the server's back (as another instance's sign-out does); the page's open
  WebSocket is closed with 4001 at the next check (the interval shortened for the test).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from engine.server import serve
from engine.server.settings import ServerSettings

from .conftest import server_settings, sign_in

COOKIE = "sconnect_console"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings overrides naming the store: none (SQLite in the state dir) or a PostgreSQL URL."""
    if request.param == "sqlite":
        yield {}
    else:
        yield {"database_url": request.getfixturevalue("pg_url")}


@asynccontextmanager
async def running(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A server for the block; stopped cleanly (store closed) on the way out."""
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve, settings)
        try:
            async with httpx.AsyncClient(base_url=handle.console.url.rstrip("/"), timeout=20) as http:
                yield http
        finally:
            handle.stop()


def _rows(settings: ServerSettings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database directly (as an operator would)."""
    if settings.database_url:
        import psycopg

        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s").encode(), params)
            return list(cursor.fetchall()) if cursor.description else []
    conn = sqlite3.connect(settings.state_dir / "sconnect.db", isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def _me(http: httpx.AsyncClient, cookie: str) -> httpx.Response:
    return await http.get("/api/me", headers={"Cookie": f"{COOKIE}={cookie}"})


async def _websocket_refused(http: httpx.AsyncClient, cookie: str) -> bool:
    """Whether the page's WebSocket handshake with this cookie is refused (403, not 101).

    A raw handshake: only the status line matters, and no client library's closing
    sequence can race the server's first frames.
    """
    url = http.base_url
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {str(url).rstrip('/')}\r\nCookie: {COOKIE}={cookie}\r\n\r\n"
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(str(url.host), int(url.port or 80))
        async with stream:
            await stream.send_all(request.encode())
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
    status = head.split(b"\r\n", 1)[0]
    assert status.startswith((b"HTTP/1.1 101", b"HTTP/1.1 403")), status
    return status.startswith(b"HTTP/1.1 403")


async def test_a_session_survives_a_restart_and_sign_out_revokes_it(
    config_dir: Path, state_dir: Path, database: dict[str, Any], token: Callable[..., str]
) -> None:
    settings = server_settings(config_dir, state_dir, **database)
    async with running(settings) as http:
        me = await sign_in(http, token("alice"))
        cookie = http.cookies[COOKIE]
    async with running(settings) as http:
        again = await _me(http, cookie)
        assert again.status_code == 200, again.text
        assert again.json()["sub"] == "alice" and again.json()["csrf"] == me["csrf"]
        assert not await _websocket_refused(http, cookie)
        out = await http.post("/api/signout", headers={"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": me["csrf"]})
        assert out.status_code == 200, out.text
        assert (await _me(http, cookie)).status_code == 401
        assert await _websocket_refused(http, cookie)
    async with running(settings) as http:
        assert (await _me(http, cookie)).status_code == 401


async def test_forged_and_expired_cookies_are_refused(
    config_dir: Path, state_dir: Path, database: dict[str, Any], token: Callable[..., str]
) -> None:
    settings = server_settings(config_dir, state_dir, **database)
    async with running(settings) as http:
        forged = await _me(http, secrets.token_urlsafe(32))
        assert forged.status_code == 401 and "not signed in" in forged.text
        assert (await _me(http, "x" * 5000)).status_code == 401
        await sign_in(http, token("alice"))
        cookie = http.cookies[COOKIE]
        digest = hashlib.sha256(cookie.encode()).hexdigest()
        assert (await _me(http, cookie)).status_code == 200
        _rows(settings, "UPDATE console_sessions SET expires_at = 1 WHERE token_hash = ?", (digest,))
        expired = await _me(http, cookie)
        assert expired.status_code == 401 and "expired" in expired.text
        http.cookies.clear()
        await sign_in(http, token("bob"))
        assert _rows(settings, "SELECT subject FROM console_sessions") == [("bob",)]


async def test_the_database_holds_no_cookie(
    config_dir: Path, state_dir: Path, database: dict[str, Any], token: Callable[..., str]
) -> None:
    settings = server_settings(config_dir, state_dir, **database)
    async with running(settings) as http:
        await sign_in(http, token("alice"))
        cookie = http.cookies[COOKIE]
    rows = _rows(settings, "SELECT token_hash, subject FROM console_sessions")
    assert rows == [(hashlib.sha256(cookie.encode()).hexdigest(), "alice")]
    if settings.database_url:
        dump = repr(_rows(settings, "SELECT * FROM console_sessions"))
    else:
        dump = "".join(
            path.read_bytes().decode("latin-1") for path in state_dir.iterdir() if path.name.startswith("sconnect.db")
        )
    assert cookie not in dump


async def test_a_sign_out_elsewhere_ends_the_pages_websocket(
    config_dir: Path, state_dir: Path, database: dict[str, Any], token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_websocket import ConnectionClosed, open_websocket_url

    from engine.console import _app

    monkeypatch.setattr(_app, "REVALIDATE_S", 0.05)
    settings = server_settings(config_dir, state_dir, **database)
    async with running(settings) as http:
        await sign_in(http, token("alice"))
        cookie = http.cookies[COOKIE]
        url = str(http.base_url).replace("http://", "ws://") + "/ws"
        headers = [(b"Origin", str(http.base_url).encode()), (b"Cookie", f"{COOKIE}={cookie}".encode())]
        with trio.fail_after(20):
            async with open_websocket_url(url, extra_headers=headers) as ws:
                assert json.loads(await ws.get_message())["type"] == "tool_list"
                digest = hashlib.sha256(cookie.encode()).hexdigest()
                _rows(settings, "UPDATE console_sessions SET revoked_at = 1 WHERE token_hash = ?", (digest,))
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
                assert ws.closed is not None and ws.closed.code == 4001


@pytest.fixture
def token() -> Callable[..., str]:
    from engine.auth import AuthSettings, issue
    from tests.engine.conftest import SECRET

    return lambda sub, roles=("user",): issue(AuthSettings(secret=SECRET), sub, list(roles), 600)
