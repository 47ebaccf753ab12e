"""A real server on 127.0.0.1, port 0, on a private copy of the shipped configuration."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from engine.auth import AuthSettings, issue
from engine.server import ServerSettings, serve
from tests.conftest import copy_shipped

SECRET = b"test-secret-for-the-suite-0123456789abcdef-0123456789abcdef-0123"
KIND_DIRS = ("agents.d", "tools.d", "resources.d", "policies")

# A tool that runs until killed, for stop/cancel tests; its argv carries a marker to find it in /proc.
SLEEPER = """\
name: sleeper
description: Sleeps for a long time (test tool).
permission_level: 0
command: [/bin/sleep, "{marker}"]
parameters: {{type: object}}
sandbox:
  timeout: 60s
"""


@attrs.frozen
class RunningServer:
    url: str
    settings: ServerSettings
    health_url: str | None = None

    def token(self, sub: str = "alice", roles: tuple[str, ...] = ("user",), ttl_s: float = 600) -> str:
        return issue(self.settings.auth, sub, list(roles), ttl_s)


def copy_example_config(target: Path, *, approval_timeout: str = "3s") -> Path:
    for name in KIND_DIRS:
        copy_shipped(name, target / name)
    assistant = target / "agents.d" / "assistant.yaml"
    assistant.write_text(assistant.read_text().replace("approval_timeout: 2m", f"approval_timeout: {approval_timeout}"))
    return target


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return copy_example_config(tmp_path / "config")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the sandbox user can traverse to (pytest's own tmp root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sconnect-test-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_server(nursery: trio.Nursery, state_dir: Path) -> Callable[..., object]:
    async def start(config: Path, **overrides: object) -> RunningServer:
        options: dict[str, object] = {"auth": AuthSettings(secret=SECRET), "port": 0, **overrides}
        settings = ServerSettings(config_dir=config, state_dir=state_dir, **options)  # type: ignore[arg-type]
        handle = await nursery.start(serve, settings)
        return RunningServer(handle.websocket, settings, handle.health)

    return start


@pytest.fixture
async def server(start_server: Callable[..., object], config_dir: Path) -> RunningServer:
    return await start_server(config_dir)  # type: ignore[no-any-return, operator]
