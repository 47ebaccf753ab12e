"""``sconnect serve`` as a real process for the security tests: start it, read its URL,
stop it with SIGTERM (a graceful stop writes the audit log's shutdown checkpoint), and
``sconnect`` commands run the same way an operator runs them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import attrs
import trio

from tests.conftest import REPO
from tests.engine.conftest import copy_example_config

SECRET = "security-test-secret-0123456789abcdef0123456789abcdef"


@attrs.frozen
class Place:
    """A private directory the sandbox user can traverse, with a copy of the shipped config."""

    base: Path
    config: Path
    state: Path


@contextmanager
def place() -> Iterator[Place]:
    base = Path(tempfile.mkdtemp(prefix="sconnect-sec-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        yield Place(base, copy_example_config(base / "config"), base / "state")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@attrs.define
class Served:
    url: str
    process: subprocess.Popen[str]
    stderr: str = ""


def _argv(where: Place, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(where.config),
            "--state-dir", str(where.state), "--shutdown-grace", "1s", *args]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The test's environment: no SCONNECT_* of the caller's, the HS256 test secret, then
    ``env`` (an empty value removes a variable)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCONNECT_")}
    merged = {**base, "SCONNECT_JWT_SECRET": SECRET, **(env or {})}
    return {k: v for k, v in merged.items() if v}


def _popen(argv: list[str], env: Mapping[str, str] | None) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=REPO, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


@asynccontextmanager
async def serving(where: Place, *args: str, env: Mapping[str, str] | None = None) -> AsyncIterator[Served]:
    """A running server; on exit SIGTERM and wait (its stderr is then in ``stderr``)."""
    process = _popen(_argv(where, args), env)
    try:
        assert process.stdout is not None and process.stderr is not None
        url = await trio.to_thread.run_sync(process.stdout.readline)
        if not url.startswith("ws"):
            await trio.to_thread.run_sync(lambda: process.wait(timeout=20))
            raise AssertionError(f"the server did not start: {process.stderr.read()}")
        served = Served(url.strip(), process)
        yield served
        process.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(lambda: process.wait(timeout=30))
        served.stderr = process.stderr.read()
        assert code == 0, served.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@attrs.frozen
class Done:
    code: int
    stdout: str
    stderr: str


async def _run(argv: list[str], env: Mapping[str, str] | None) -> Done:
    with trio.fail_after(60):
        done = await trio.run_process(argv, cwd=REPO, env=_env(env), capture_stdout=True, capture_stderr=True,
                                      check=False, stdin=subprocess.DEVNULL)
    return Done(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


async def refused_start(where: Place, *args: str, env: Mapping[str, str] | None = None) -> Done:
    """Start a server that is expected to refuse: its exit status and output."""
    return await _run(_argv(where, args), env)


async def sconnect(*args: str, env: Mapping[str, str] | None = None) -> Done:
    """One ``sconnect`` command as an operator runs it."""
    return await _run([sys.executable, "-m", "engine", *args], env)
