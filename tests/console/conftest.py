"""A real server with its console on 127.0.0.1 (port 0), and helpers to sign in over HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import sandbox
from engine.auth import AuthSettings, issue, verify
from engine.server import ServerSettings, serve
from engine.server.app import ServerHandle
from engine.toolrun import subject_workspace
from tests.engine.conftest import SECRET, config_dir, state_dir  # noqa: F401  (fixtures)

pytest.importorskip("hypercorn", reason="the console needs hypercorn (the 'mcp' extra)")


@attrs.frozen
class Console:
    """A running server and its console."""

    handle: ServerHandle
    settings: ServerSettings

    @property
    def url(self) -> str:
        return str(self.handle.console.url)

    def token(self, sub: str = "alice", roles: tuple[str, ...] = ("user",), ttl_s: float = 600) -> str:
        return issue(self.settings.auth, sub, list(roles), ttl_s)

    def link(self, sub: str, roles: tuple[str, ...]) -> str:
        """A one-time sign-in link, as ``serve --dev`` prints."""
        return str(self.handle.console.signin_link(verify(self.token(sub, roles), self.settings.auth)))

    def write_notes(self, text: str) -> None:
        notes = subject_workspace(self.settings.workspace, "alice") / "notes.txt"
        notes.write_text(text)
        if os.geteuid() == 0:
            os.chown(notes, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


def server_settings(config: Path, state: Path, **overrides: Any) -> ServerSettings:
    options: dict[str, Any] = {"auth": AuthSettings(secret=SECRET), "port": 0, "console_port": 0, **overrides}
    return ServerSettings(config_dir=config, state_dir=state, **options)


@pytest.fixture
def start_console(nursery: trio.Nursery) -> Callable[..., Any]:
    async def start(config: Path, state: Path, **overrides: Any) -> Console:
        settings = server_settings(config, state, **overrides)
        handle = await nursery.start(serve, settings)
        return Console(handle, settings)

    return start


@pytest.fixture
async def console(start_console: Callable[..., Any], config_dir: Path, state_dir: Path) -> Console:  # noqa: F811
    return await start_console(config_dir, state_dir)  # type: ignore[no-any-return]


async def sign_in(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Sign in as a page does: a CSRF token first, then the form POST with it in the header."""
    csrf = (await client.get("/api/csrf")).json()["csrf"]
    response = await client.post("/api/signin", data={"token": token}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    me = (await client.get("/api/me")).json()
    return dict(me)
