"""A scripted model server, and a copy of the shipped configuration with models pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import copy_shipped
from tests.engine.conftest import copy_example_config, start_server, state_dir  # noqa: F401 (fixtures)
from tests.models.scripted import ScriptedServer


@pytest.fixture
async def scripted(nursery: trio.Nursery) -> ScriptedServer:
    server: ScriptedServer = await nursery.start(ScriptedServer().serve)
    return server


def model_file(name: str, base_url: str, *, extra: str = "") -> str:
    """A models.d/ file for the scripted server; its ``model`` field is the name (the script's key)."""
    return (
        f"name: {name}\ndescription: Scripted model {name} (test).\nprovider: openai\n"
        f"base_url: {base_url}\nmodel: {name}\nconnect_timeout: 2s\ntimeout: 5s\n"
        # A tiny cap: a Retry-After of seconds is honoured, but the test does not wait for it.
        f"retries: 2\nretry_backoff: 1ms\nretry_max_wait: 10ms\n{extra}"
    )


def agent_file(model_line: str, tools: str = "[calculator]") -> str:
    return (
        "name: llm\ndescription: An agent on scripted models (test).\n"
        f"tools: {tools}\napproval_timeout: 3s\n{model_line}\n"
    )


@pytest.fixture
def llm_config(tmp_path: Path) -> Path:
    """The shipped configuration (models.d/ included) in a private directory."""
    target = copy_example_config(tmp_path / "config")
    copy_shipped("models.d", target / "models.d")
    return target
