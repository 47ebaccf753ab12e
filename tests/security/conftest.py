"""Fixtures for the attack tests: the engine's running-server fixtures, and waiting for a reply."""

from __future__ import annotations

from engine.client import Client
from engine.protocol import ServerFrame
from tests.engine.conftest import config_dir, server, start_server, state_dir  # noqa: F401 - fixtures


async def reply_to(client: Client, frame_id: str) -> ServerFrame:
    """The next event answering ``frame_id`` (for frames sent raw, which the client cannot build)."""
    async for event in client.events():
        if getattr(event, "reply_to", None) == frame_id:
            return event
    raise AssertionError(f"the connection closed before a reply to {frame_id!r}")
