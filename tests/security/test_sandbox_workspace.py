"""One workspace per subject, with a quota (issue 11 item 9); each test calls real tools.

- test_another_subject_cannot_read_my_files: alice writes notes with the shipped
  `write_file`; bob's `read_file` of the same path fails and his `list_files` is empty,
  while alice reads her file back;
- test_payment_ledger_is_private: alice's `send_payment` memo lands in her own
  workspace (0700, under a workspace root nobody can list), in a 0600 ledger; bob's
  `read_file` of `payments.jsonl` fails;
- test_shared_scope_is_shared: a tool declaring `workspace_scope: shared` sees one area
  for everyone;
- test_workspace_directories_never_collide: subjects differing only in characters the
  directory name cannot hold get different directories;
- test_a_call_writing_past_the_quota_is_stopped: a 1 MiB quota stops one 3 MB file
  (file size limit), then a call writing several files under the per-file cap but over
  the quota is `limit_exceeded`, after which no file can grow and deleting still works;
- test_a_call_writing_files_forever_is_killed: a tool that writes small files in an
  endless loop (each under the per-file cap) is killed by the quota watcher long before
  its timeout, and is `limit_exceeded`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import sandbox
from engine.config import load_config
from engine.config.model import SandboxNeeds, Tool
from engine.config.units import Bytes
from engine.server.app import prepare_state_dir
from engine.toolrun import run_tool, subject_dir_name, subject_workspace
from tests.conftest import copy_shipped

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state() -> Iterator[Path]:
    """A state directory the sandbox user can reach (pytest's tmp_path is 0700)."""
    root = tempfile.mkdtemp(prefix="sconnect-wstest-")
    os.chmod(root, 0o755)
    path = Path(root) / "state"
    prepare_state_dir(path)
    yield path
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tool]:
    config = tmp_path_factory.mktemp("config")
    for name in ("agents.d", "tools.d", "resources.d", "policies"):
        copy_shipped(name, config / name)
    return dict(load_config(config).tools)


async def _call(tool: Tool, state: Path, subject: str, **arguments: Any) -> sandbox.Result:
    if sandbox.detect().namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {sandbox.detect().namespaces_problem()}")
    return await run_tool(
        tool, arguments, workspace=state / "workspace", work_root=state / "work", subject=subject
    )


async def test_another_subject_cannot_read_my_files(tools: dict[str, Tool], state: Path) -> None:
    wrote = await _call(tools["write_file"], state, "alice", path="diary.txt", content="secret")
    assert wrote.status == "ok", wrote
    mine = await _call(tools["read_file"], state, "alice", path="diary.txt")
    assert mine.status == "ok" and mine.output["content"] == "secret"
    theirs = await _call(tools["read_file"], state, "bob", path="diary.txt")
    assert theirs.status == "error"
    assert "secret" not in str(theirs.output) + theirs.stderr_tail
    listing = await _call(tools["list_files"], state, "bob", path=".")
    assert listing.status == "ok", listing
    assert "diary.txt" not in str(listing.output)


async def test_payment_ledger_is_private(tools: dict[str, Tool], state: Path) -> None:
    paid = await _call(tools["send_payment"], state, "alice", recipient="ACME", amount=12, memo="PIN 4711")
    assert paid.status == "ok", paid
    ledger = subject_workspace(state / "workspace", "alice") / "payments.jsonl"
    assert "PIN 4711" in ledger.read_text()
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert stat.S_IMODE(ledger.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(ledger.parent.parent.stat().st_mode) == 0o711  # who has one: unlisted
    theirs = await _call(tools["read_file"], state, "bob", path="payments.jsonl")
    assert theirs.status == "error"
    assert "4711" not in str(theirs.output) + theirs.stderr_tail


async def test_shared_scope_is_shared(tools: dict[str, Tool], state: Path) -> None:
    def shared(tool: Tool) -> Tool:
        return attrs.evolve(tool, sandbox=attrs.evolve(tool.sandbox, workspace_scope="shared"))

    wrote = await _call(shared(tools["write_file"]), state, "alice", path="board.txt", content="hi all")
    assert wrote.status == "ok", wrote
    read = await _call(shared(tools["read_file"]), state, "bob", path="board.txt")
    assert read.status == "ok" and read.output["content"] == "hi all"
    private = await _call(tools["read_file"], state, "bob", path="board.txt")
    assert private.status == "error"


def test_workspace_directories_never_collide() -> None:
    names = {subject_dir_name(s) for s in ("a/b", "a_b", "a b", "..", ".", "", "shared")}
    assert len(names) == 7
    assert all("/" not in name and not name.startswith(".") for name in names)
    assert "shared" not in names


def _sh(script: str, quota: int) -> Tool:
    return Tool(
        name="writer", description="writes", parameters={"type": "object"}, permission_level=0,
        command=("/bin/sh", "-c", script),
        sandbox=SandboxNeeds(workspace="write", workspace_quota=Bytes(quota)),
    )  # fmt: skip


async def test_a_call_writing_past_the_quota_is_stopped(state: Path) -> None:
    quota = 2**20
    one_big = await _call(_sh("head -c 3000000 /dev/zero > big", quota), state, "carol")
    assert one_big.status == "limit_exceeded", one_big
    assert "file size" in one_big.message
    own = subject_workspace(state / "workspace", "carol")
    assert (own / "big").stat().st_size <= quota
    (own / "big").unlink()
    many = "for i in 1 2 3 4; do head -c 600000 /dev/zero > f$i || exit 1; done"
    spread = await _call(_sh(many, quota), state, "carol")
    assert spread.status == "limit_exceeded", spread
    assert "quota" in spread.message
    grow = await _call(_sh("echo more >> f1", quota), state, "carol")
    assert grow.status == "limit_exceeded", grow
    cleanup = await _call(_sh("rm f1 f2 f3 f4", quota), state, "carol")
    assert cleanup.status == "ok", cleanup
    again = await _call(_sh("echo fine > small", quota), state, "carol")
    assert again.status == "ok", again


async def test_a_call_writing_files_forever_is_killed(state: Path) -> None:
    quota = 2**20
    forever = "i=0; while :; do i=$((i+1)); head -c 100000 /dev/zero > f$i || exit 1; done"
    tool = _sh(forever, quota)
    tool = attrs.evolve(tool, sandbox=attrs.evolve(tool.sandbox, timeout=60))
    result = await _call(tool, state, "dave")
    assert result.status == "limit_exceeded", result
    assert "quota" in result.message and "killed" in result.message
    assert result.wall_time_s < 60  # ended by the watcher, not by its timeout
