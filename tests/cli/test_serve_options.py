"""Server settings: sconnect.yaml, SCONNECT_* variables and flags, and refusing to expose tokens in clear."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected

from engine.client import open_client
from tests.conftest import SHIPPED_CONFIG
from tests.engine.conftest import copy_example_config

SECRET = "options-test-secret-0123456789abcdef0123456789"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sconnect-opt-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "serve", *args],
        cwd=SHIPPED_CONFIG,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SCONNECT_JWT_SECRET": SECRET, **(env or {})},
    )


def test_a_public_address_without_tls_is_refused(base: Path) -> None:
    done = serve("--host", "0.0.0.0", "--port", "0", "--state-dir", str(base / "s"))
    assert done.returncode == 2
    assert "refusing to serve 0.0.0.0 without TLS" in done.stderr


def test_half_a_tls_configuration_is_refused(base: Path) -> None:
    done = serve("--tls-cert", "/nonexistent.pem", "--state-dir", str(base / "s"))
    assert done.returncode == 2 and "needs both a certificate" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits:\n  conections: 5\n", "sconnect.yaml:2:3: limits: Additional properties are not allowed"),
        ("limits:\n  idle_timeout: 5 parsecs\n", "limits.idle_timeout: '5 parsecs' is not a duration"),
        ("port: eighty\n", "sconnect.yaml:1:7: port: 'eighty' is not of type 'integer'"),
    ],
)
def test_a_broken_server_file_is_located(base: Path, text: str, message: str) -> None:
    config = copy_example_config(base / "config")
    (config / "sconnect.yaml").write_text(text)
    done = serve("--config", str(config), "--state-dir", str(base / "s"))
    assert done.returncode == 2
    assert message in done.stderr


def test_unknown_limit_flag(base: Path) -> None:
    done = serve("--limit", "turbo=11", "--state-dir", str(base / "s"))
    assert done.returncode == 2 and "unknown limit 'turbo'" in done.stderr


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SCONNECT_LIMITS_INSTANCE_HEARTBEAT", "often", "SCONNECT_LIMITS_INSTANCE_HEARTBEAT: 'often' is not a duration"),
    ("SCONNECT_LIMITS_TURBO", "11", "SCONNECT_LIMITS_TURBO: unknown limit 'turbo'"),
])
def test_a_bad_limit_variable_is_named(base: Path, variable: str, value: str, message: str) -> None:
    done = serve("--port", "0", "--state-dir", str(base / "s"), env={variable: value})
    assert done.returncode == 2 and message in done.stderr, done.stderr


async def test_file_then_environment_then_flags(base: Path) -> None:
    config = copy_example_config(base / "config")
    (config / "sconnect.yaml").write_text("port: 1\nlimits:\n  connections_per_subject: 5\n  idle_timeout: 1h\n")
    env = {**os.environ, "SCONNECT_JWT_SECRET": SECRET, "SCONNECT_LIMITS_CONNECTIONS_PER_SUBJECT": "3"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--config",
            str(config),
            "--state-dir",
            str(base / "s"),
            "--port",
            "0",
            "--limit",
            "connections_per_subject=1",
        ],
        cwd=SHIPPED_CONFIG,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = (await trio.to_thread.run_sync(server.stdout.readline)).strip()
        assert url.startswith("ws://127.0.0.1:") and not url.startswith("ws://127.0.0.1:1/")
        claims = {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 600}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        with trio.fail_after(10):
            async with open_client(url, token):
                with pytest.raises(ConnectionRejected) as caught:
                    async with open_client(url, token):
                        pass
                assert caught.value.status_code == 429
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_bad_tls_files_are_named(base: Path) -> None:
    done = serve(
        "--tls-cert", str(base / "missing.pem"), "--tls-key", str(base / "missing.key"), "--state-dir", str(base / "s")
    )
    assert done.returncode == 2
    assert f"TLS: {base / 'missing.pem'}: no such file" in done.stderr


def test_limits_have_minimums_and_every_problem_is_located(base: Path) -> None:
    config = copy_example_config(base / "config")
    (config / "sconnect.yaml").write_text("shutdown_grace: -3s\nlimits:\n  max_frame: 0B\n  idle_timeout: 0ms\n")
    done = serve("--config", str(config), "--state-dir", str(base / "s"))
    assert done.returncode == 2
    assert "sconnect.yaml:1:17: shutdown_grace: '-3s' is not a duration" in done.stderr
    assert "sconnect.yaml:3:14: limits.max_frame: '0B' is too small" in done.stderr
    assert "limits.idle_timeout: '0ms' is too small" in done.stderr


def test_a_second_server_on_the_same_state_dir_is_one_line(base: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--state-dir", str(base / "s")],
        cwd=SHIPPED_CONFIG,
        env={**os.environ, "SCONNECT_JWT_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline().startswith("ws://")
        done = serve("--port", "0", "--state-dir", str(base / "s"))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "another process is writing this audit log" in done.stderr
    finally:
        first.terminate()
        first.wait(timeout=15)


@pytest.mark.parametrize(
    ("args", "env", "file", "message"),
    [
        (["--port", "70000"], {}, None, "argument --port: '70000' is not a port number (0-65535"),
        (["--health-port", "-1"], {}, None, "argument --health-port: '-1' is not a port number"),
        ([], {"SCONNECT_PORT": "70001"}, None, "SCONNECT_PORT=70001: '70001' is not a port number (0-65535"),
        ([], {"SCONNECT_HEALTH_PORT": "http"}, None, "SCONNECT_HEALTH_PORT=http: 'http' is not a port number"),
        ([], {}, "port: 65536\n", "sconnect.yaml:1:7: port: 65536 is greater than the maximum of 65535"),
    ],
)
def test_ports_are_validated_everywhere(
    base: Path, args: list[str], env: dict[str, str], file: str | None, message: str
) -> None:
    config = copy_example_config(base / "config")
    if file is not None:
        (config / "sconnect.yaml").write_text(file)
    done = serve("--config", str(config), "--state-dir", str(base / "s"), *args, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_flag_that_overrides_the_settings_file_says_so(base: Path) -> None:
    config = copy_example_config(base / "config")
    (config / "sconnect.yaml").write_text("port: 1\nhealth_port: 0\nlimits:\n  idle_timeout: 1h\n")
    server = await trio.to_thread.run_sync(
        lambda: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "serve",
                "--config",
                str(config),
                "--state-dir",
                str(base / "s"),
                "--port",
                "0",
                "--limit",
                "idle_timeout=5m",
            ],
            cwd=SHIPPED_CONFIG,
            env={**os.environ, "SCONNECT_JWT_SECRET": SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    try:
        assert server.stdout is not None and server.stderr is not None
        assert (await trio.to_thread.run_sync(server.stdout.readline)).startswith("ws://127.0.0.1:")
    finally:
        server.terminate()
        _, stderr = await trio.to_thread.run_sync(server.communicate)
    notices = [line for line in stderr.splitlines() if "overrides" in line]
    assert len(notices) == 1, stderr
    assert "--port 0 overrides port: 1; --limit idle_timeout=... overrides limits.idle_timeout: 3600.0" in notices[0]
    assert f"(from {config / 'sconnect.yaml'})" in notices[0]


def test_an_os_error_that_is_not_about_listening_is_named_as_such(base: Path) -> None:
    (base / "a-file").write_text("not a directory")
    done = serve("--port", "0", "--state-dir", str(base / "a-file"))
    assert done.returncode == 1
    expected = f"sconnect: stopped by an operating system error: File exists ({base / 'a-file'}) [FileExistsError"
    assert expected in done.stderr
    assert "cannot listen" not in done.stderr


@pytest.mark.parametrize("flag", ["--health-port", "--mcp-port", "--console-port"])
def test_a_port_in_use_is_named(base: Path, flag: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve("--port", "0", flag, str(port), "--state-dir", str(base / "s"))
    assert done.returncode == 2, done.stderr
    assert (
        f"sconnect: cannot listen on 127.0.0.1:{port}: Address already in use "
        f"(pick another {flag}, or 0 for a free one)"
    ) in done.stderr
    assert "Traceback" not in done.stderr
