"""Anonymous connections cannot exhaust the server's descriptors (issue 11, item 1).

- test_idle_connections_past_the_descriptor_budget: a server started under
  `prlimit --nofile=256` (its open-files budget), then 900 TCP connections that never send
  a byte: 600 from one address (127.0.0.2) and 300 from fifteen others (127.0.0.3-17),
  more than the process could hold. (The attack: ~1,100 such connections under the usual
  limit of 1,024 made the config watcher's listdir fail with EMFILE and the server exit.)
  The server closes what is past its handshake limits at once; it stays up, an
  authenticated client from 127.0.0.1 gets a round trip, a changed tools.d/ is reloaded
  and pushed to that client, and /healthz answers. The limits derived from the budget
  are logged at start.
- test_the_config_watcher_survives_emfile: the (in-process) server runs out of descriptors
  while a tool file changes; the watcher logs EMFILE instead of ending the server, and
  reloads the change once descriptors are free.
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

from engine.client import open_client
from engine.protocol import ToolList
from tests.conftest import REPO
from tests.engine.conftest import copy_example_config

SECRET = "descriptor-test-secret-0123456789abcdef0123456789"
NEW_TOOL = """\
name: added_during_attack
description: Appears while the server is under attack (test tool).
permission_level: 0
command: [/bin/cat]
parameters: {type: object}
"""

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sconnect-fd-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def idle_connection(
    source: str, port: int, closed: list[int], held: list[trio.socket.SocketType], enough: tuple[int, trio.Event]
) -> None:
    """Connect from ``source`` and send nothing; count the connection when the server closes it."""
    sock = trio.socket.socket()
    held.append(sock)
    await sock.bind((source, 0))
    try:
        await sock.connect(("127.0.0.1", port))
        while await sock.recv(4096):
            pass
    except OSError:
        pass  # reset or refused: closed by the server all the same
    closed.append(1)
    if len(closed) >= enough[0]:
        enough[1].set()


async def healthz(url: str) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_idle_connections_past_the_descriptor_budget(base: Path) -> None:
    config = copy_example_config(base / "config")
    server = await trio.to_thread.run_sync(lambda: subprocess.Popen(
        ["prlimit", "--nofile=256:256", sys.executable, "-m", "engine", "serve", "--config", str(config),
         "--state-dir", str(base / "state"), "--port", "0", "--health-port", "0"],
        cwd=REPO, env={**os.environ, "SCONNECT_JWT_SECRET": SECRET}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ))
    try:
        assert server.stdout is not None
        url = (await trio.to_thread.run_sync(server.stdout.readline)).strip()
        health = (await trio.to_thread.run_sync(server.stdout.readline)).split()[3]
        assert url.startswith("ws://127.0.0.1:") and health.startswith("http://")
        port = int(url.split(":")[2].split("/")[0])
        claims = {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 600}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        closed: list[int] = []
        held: list[trio.socket.SocketType] = []
        sources = ["127.0.0.2"] * 600 + [f"127.0.0.{3 + index % 15}" for index in range(300)]
        # The server closes whatever is past its limits (32 handshakes for 256 files).
        enough = (len(sources) - 32, trio.Event())
        with trio.fail_after(60):
            async with trio.open_nursery() as attack:
                for source in sources:
                    attack.start_soon(idle_connection, source, port, closed, held, enough)
                await enough[1].wait()
                assert server.poll() is None
                async with open_client(url, token) as client:
                    assert (await client.list_tools()).tools
                    (config / "tools.d" / "added.yaml").write_text(NEW_TOOL)
                    async for event in client.events():
                        if isinstance(event, ToolList) and "added_during_attack" in [t.name for t in event.tools]:
                            break
                assert b"200 OK" in await healthz(health)
                attack.cancel_scope.cancel()
        assert server.poll() is None
    finally:
        for sock in held:
            sock.close()
        server.send_signal(signal.SIGTERM)
        _, stderr = await trio.to_thread.run_sync(server.communicate)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "open files: 256; at most 96 connections, 32 handshakes at once (4 per address)" in stderr


async def test_the_config_watcher_survives_emfile(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The process runs out of descriptors while a config file changes: the watcher's
    listdir fails with EMFILE (it used to end the server); it logs, retries, and reloads
    the change once descriptors are free again."""
    import logging
    import resource

    failed = trio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Too many open files" in record.getMessage():
                failed.set()  # the watcher logs from the event loop's thread

    watch = Watch()
    logging.getLogger("engine.server.reload").addHandler(watch)
    server = await start_server(config_dir, reload_interval_s=0.05)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            assert (await client.list_tools()).tools
            # The new file is opened first: writing it needs a descriptor too.
            hogs = [os.open(config_dir / "tools.d" / "added.yaml", os.O_WRONLY | os.O_CREAT, 0o644)]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
            try:
                while True:  # every descriptor this process may still open
                    try:
                        hogs.append(os.open("/dev/null", os.O_RDONLY))
                    except OSError:
                        break
                os.write(hogs[0], NEW_TOOL.encode())
                await failed.wait()
            finally:
                logging.getLogger("engine.server.reload").removeHandler(watch)
                for fd in hogs:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            async for event in client.events():
                if isinstance(event, ToolList) and "added_during_attack" in [t.name for t in event.tools]:
                    break
