"""file:// hosts: a root swapped by a tool, and roots placed where tools write (issue 11, item 10).

- test_a_root_swapped_for_a_symlink_is_not_followed: a real server serves a file
  host rooted in a directory; the directory is then replaced by a symlink to a
  directory holding a "secret" marker file (what a tool did with the state dir).
  The read through the server is refused and the marker never comes back.
- test_a_root_swapped_for_another_directory_is_refused: the same with a real
  directory renamed into the root's place (device/inode differ from the load).
- test_a_root_inside_the_workspace_is_a_located_config_error, ..._inside_a_tools_writable_path,
  ..._through_a_symlink_into_the_workspace: building the hosts refuses such a root with
  ``file:line`` of its ``root`` key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.client import ServerError, open_client
from engine.config import load_config
from engine.errors import ConfigError
from engine.protocol import ResourceRequest, ResourceResponse, new_id
from engine.resources import ResourceHosts
from tests.engine.conftest import start_server, state_dir  # noqa: F401 (fixtures)

MARKER = "secret-marker-7f3a"

READERS = """\
name: readers
description: Members may read the served documents.
roles:
  member: {description: Everyone.}
rules:
  - id: members-read
    effect: allow
    subjects: {roles: [member]}
    actions: [resource.read]
    targets: {resources: ["file://served/**"]}
"""


def served_config(config: Path, root: Path) -> Path:
    (config / "resources.d").mkdir(parents=True)
    (config / "policies").mkdir()
    (config / "resources.d" / "served.yaml").write_text(
        f"scheme: file\nname: served\ndescription: Served documents.\nroot: {root}\n"
    )
    (config / "policies" / "readers.yaml").write_text(READERS)
    return config


async def read(client, uri: str) -> ResourceResponse:  # type: ignore[no-untyped-def]
    reply = await client.request(ResourceRequest(id=new_id(), uri=uri))
    assert isinstance(reply, ResourceResponse)
    return reply


@pytest.fixture
def swap(tmp_path: Path) -> tuple[Path, Path]:
    """A served root holding notes.txt, and a secret directory whose notes.txt holds the marker."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "notes.txt").write_text("public notes")
    secret = tmp_path / "state-like"
    secret.mkdir()
    (secret / "notes.txt").write_text(MARKER)
    return root, secret


async def test_a_root_swapped_for_a_symlink_is_not_followed(
    start_server: Callable[..., object], tmp_path: Path, swap: tuple[Path, Path]  # noqa: F811
) -> None:
    root, secret = swap
    server = await start_server(served_config(tmp_path / "config", root))  # type: ignore[operator]
    token = server.token("alice", ("member",))
    with trio.fail_after(20):
        async with open_client(server.url, token) as client:
            assert (await read(client, "file://served/notes.txt")).content == "public notes"
            root.rename(tmp_path / "moved-away")
            os.symlink(secret, root)
            with pytest.raises(ServerError) as caught:
                await read(client, "file://served/notes.txt")
    assert caught.value.code in ("forbidden", "unavailable")
    assert MARKER not in caught.value.message and "symlink" in caught.value.message


async def test_a_root_swapped_for_another_directory_is_refused(
    start_server: Callable[..., object], tmp_path: Path, swap: tuple[Path, Path]  # noqa: F811
) -> None:
    root, secret = swap
    server = await start_server(served_config(tmp_path / "config", root))  # type: ignore[operator]
    token = server.token("alice", ("member",))
    with trio.fail_after(20):
        async with open_client(server.url, token) as client:
            assert (await read(client, "file://served/notes.txt")).content == "public notes"
            root.rename(tmp_path / "moved-away")
            secret.rename(root)
            with pytest.raises(ServerError) as caught:
                await read(client, "file://served/notes.txt")
    assert caught.value.code == "forbidden"
    assert MARKER not in caught.value.message and "replaced" in caught.value.message


def test_a_root_inside_the_workspace_is_a_located_config_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "workspace" / "docs").mkdir(parents=True)
    config = load_config(served_config(tmp_path / "config", state / "workspace" / "docs"))
    with pytest.raises(ConfigError) as caught:
        ResourceHosts(config, state)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("resources.d/served.yaml", 4, "root")
    assert "state directory" in problem.message


def test_a_root_inside_a_tools_writable_path_is_a_located_config_error(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "docs").mkdir(parents=True)
    config_dir = served_config(tmp_path / "config", shared / "docs")
    (config_dir / "tools.d").mkdir()
    (config_dir / "tools.d" / "scribble.yaml").write_text(
        "name: scribble\ndescription: Writes to the shared dir.\npermission_level: 0\ncommand: [/bin/true]\n"
        f"parameters: {{type: object}}\nsandbox:\n  writable_paths: [{shared}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        ResourceHosts(load_config(config_dir), tmp_path / "state")
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("resources.d/served.yaml", 4, "root")
    assert "tool scribble's writable path" in problem.message


def test_a_root_reached_through_a_symlink_into_the_workspace_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "workspace").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The root as written lies in the workspace (a tool could re-point the link), though it resolves outside.
    os.symlink(elsewhere, state / "workspace" / "docs")
    config = load_config(served_config(tmp_path / "config", state / "workspace" / "docs"))
    with pytest.raises(ConfigError, match="state directory"):
        ResourceHosts(config, state)
