"""``sconnect serve`` with the console, as a real subprocess: what the README tells a new user.

- ``serve --dev --console-port 0`` prints the console's URL and one-time sign-in links; the
  link's code signs in once (as the page does: a CSRF token, then a POST);
- ``console_port`` in sconnect.yaml turns the console on;
- a console on a non-loopback address without TLS is refused (exit 2), like the WebSocket;
- under TLS the console is https:// and its session cookie is Secure.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from engine.console._app import SESSION_COOKIE
from tests.conftest import REPO
from tests.engine.conftest import copy_example_config
from tests.engine.tls import self_signed

from .conftest import Console, sign_in

SECRET = "console-test-secret-0123456789abcdef0123456789"


@pytest.fixture
def base(state_dir: Path) -> Path:
    return state_dir.parent


def _start(base: Path, *args: str) -> subprocess.Popen[str]:
    config = copy_example_config(base / "config")
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--config", str(config), "--state-dir", str(base / "state"),
         "--port", "0", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SCONNECT_JWT_SECRET": SECRET},
    )


def _lines_until(process: subprocess.Popen[str], marker: str) -> str:
    """stdout up to the line holding ``marker`` (bounded: the server prints a dozen lines)."""
    assert process.stdout is not None
    seen = []
    for _ in range(50):
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    errors = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"no {marker!r} in the output: {''.join(seen)}{errors}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_dev_prints_one_time_links_that_sign_in_once(base: Path) -> None:
    process = _start(base, "--dev", "--console-port", "0")
    try:
        out = await trio.to_thread.run_sync(_lines_until, process, "console for root-admin")
        url = re.search(r"^console: (http://127\.0\.0\.1:\d+/)$", out, re.M)
        link = re.search(r"console for alice \(one-time link\):\s+(\S+)", out)
        assert url and link, out
        assert link.group(1).startswith(url.group(1) + "#code=")
        code = link.group(1).split("#code=", 1)[1]
        async with httpx.AsyncClient(base_url=url.group(1).rstrip("/"), timeout=10) as http:
            http.headers["X-CSRF-Token"] = (await http.get("/api/csrf")).json()["csrf"]
            first = await http.post("/api/signin", data={"code": code})
            me = (await http.get("/api/me")).json()
            # Sign-in spends the pre-sign-in CSRF token: a second attempt needs a new one.
            http.headers["X-CSRF-Token"] = (await http.get("/api/csrf")).json()["csrf"]
            again = await http.post("/api/signin", data={"code": code})
        assert first.status_code == 200 and me["sub"] == "alice" and again.status_code == 401
    finally:
        await trio.to_thread.run_sync(_stop, process)


async def test_console_port_in_the_settings_file(base: Path) -> None:
    (base / "sconnect.yaml").write_text("console_port: 0\nconsole_host: 127.0.0.1\n")
    process = _start(base, "--server-config", str(base / "sconnect.yaml"))
    try:
        out = await trio.to_thread.run_sync(_lines_until, process, "console: ")
        assert re.search(r"^console: http://127\.0\.0\.1:\d+/$", out, re.M), out
    finally:
        await trio.to_thread.run_sync(_stop, process)


def test_a_public_console_without_tls_is_refused(base: Path) -> None:
    process = _start(base, "--console-port", "0", "--console-host", "0.0.0.0")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "refusing to serve the console on 0.0.0.0 without TLS" in err


async def test_tls_console_sets_a_secure_cookie(start_console: object, config_dir: Path, state_dir: Path,
                                                tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    console: Console = await start_console(config_dir, state_dir, tls_cert=cert, tls_key=key)  # type: ignore[operator]
    assert console.url.startswith("https://127.0.0.1:")
    async with httpx.AsyncClient(base_url=console.url.rstrip("/"), verify=ssl.create_default_context(cafile=cert),
                                 timeout=10) as http:
        await sign_in(http, console.token("alice"))
        cookie = next(c for c in http.cookies.jar if c.name == SESSION_COOKIE)
    assert cookie.secure
