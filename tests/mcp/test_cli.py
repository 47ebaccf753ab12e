"""``sconnect serve --mcp-port`` as a process: the URL is printed, a client is served, SIGTERM drains it.

Also the refusals at start: an anonymous role on a public address, or without MCP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import trio

from tests.conftest import REPO
from tests.engine.conftest import copy_example_config
from tests.mcp.conftest import mcp_client

SECRET = "mcp-cli-test-secret-0123456789abcdef0123456789"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sconnect-mcp-", dir="/tmp"))
    os.chmod(path, 0o711)
    copy_example_config(path / "config")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve(base: Path, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(base / "config"),
         "--state-dir", str(base / "state"), "--shutdown-grace", "2s", *flags],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _token(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def test_serve_prints_the_mcp_url_serves_it_and_drains_on_sigterm(base: Path) -> None:
    server = _serve(base, "--mcp-port", "0")
    try:
        assert server.stdout is not None
        with trio.fail_after(60):
            lines = []
            while not lines or not lines[-1].startswith("mcp: "):
                line = await trio.to_thread.run_sync(server.stdout.readline)
                assert line, server.stderr.read() if server.stderr else ""
                lines.append(line.strip())
            url = lines[-1].removeprefix("mcp: ")
            assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
            async with mcp_client(url, _token()) as client:
                result = await client.call_tool("calculator", {"expression": "2**10"})
                assert not result.is_error and result.structured_content["result"] == 1024
                server.send_signal(signal.SIGTERM)
                code = await trio.to_thread.run_sync(lambda: server.wait(timeout=30))
        assert code == 0, server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize(("flags", "message"), [
    (("--host", "0.0.0.0", "--insecure-public", "--mcp-port", "0", "--mcp-anonymous-role", "user"),
     "only a loopback --host may"),
    (("--mcp-anonymous-role", "user"), "--mcp-anonymous-role needs --mcp-port"),
    (("--mcp-port", "0", "--mcp-anonymous-role", "usr"), "no policy declares the role 'usr' (declared: admin, user)"),
])
def test_an_anonymous_role_is_refused_where_it_is_not_safe(base: Path, flags: tuple[str, ...], message: str) -> None:
    server = _serve(base, *flags)
    _out, err = server.communicate(timeout=60)
    assert server.returncode == 2 and message in err, err
