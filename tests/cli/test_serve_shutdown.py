"""``sconnect serve`` as a process: SIGTERM during a running tool exits cleanly, kills the tool, keeps the audit
intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from engine.audit import query, verify
from engine.client import open_client
from engine.protocol import AgentAction, ToolCall
from tests.conftest import REPO, processes_with
from tests.engine.conftest import SLEEPER, copy_example_config
from tests.engine.processes import unique_marker

SECRET = "shutdown-test-secret-0123456789abcdef0123456789"


async def test_sigterm_during_a_running_tool(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="sconnect-term-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        config = copy_example_config(base / "config")
        marker = unique_marker("4669")
        (config / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
        state = base / "state"
        env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "serve",
                "--port",
                "0",
                "--config",
                str(config),
                "--state-dir",
                str(state),
                "--shutdown-grace",
                "1s",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = await trio.to_thread.run_sync(server.stdout.readline)
            import time

            import jwt

            token = jwt.encode(
                {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256"
            )
            with trio.fail_after(20):
                async with open_client(url.strip(), token) as client:
                    await client.send(ToolCall(id="long", name="sleeper", arguments={}))
                    await client.next_event_of(AgentAction)
                    while not processes_with(marker):  # noqa: ASYNC110 (polling /proc)
                        await trio.sleep(0.05)
                    server.send_signal(signal.SIGTERM)
                    code = await trio.to_thread.run_sync(lambda: server.wait(timeout=15))
                    # Before the connection closed, the client was told, and got the cancelled result.
                    seen = []
                    with trio.move_on_after(2):
                        async for frame in client.events():
                            seen.append(
                                (type(frame).__name__, str(getattr(frame, "code", getattr(frame, "status", ""))))
                            )
                    assert ("ErrorFrame", "unavailable") in seen
                    assert ("AgentResult", "cancelled") in seen
            err = server.stderr.read() if server.stderr else ""
            assert code == 0, err
            assert "cancelling the work still running" in err
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert processes_with(marker) == []
        report = verify(state)
        assert report.ok, report
        assert [r.outcome for r in query(state, kind="execution", tool="sleeper")] == ["cancelled"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
