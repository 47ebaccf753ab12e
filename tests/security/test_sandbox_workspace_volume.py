"""A hard per-subject disk bound: each workspace a filesystem of its own (issue 11 item 9).

The polled quota lets one call overshoot by what it writes between two measurements.
With ``SCONNECT_WORKSPACE_VOLUME`` set, each workspace is an ext4 image of that size
loop-mounted on its directory, and the kernel refuses writes past it. Each test calls
real tools through ``engine.toolrun.run_tool``, with a per-tool quota far above the
volume so that only the volume can stop them:

- test_writing_past_the_volume_fails_at_its_size: a tool writes 12 MiB of small files
  into a 4 MiB volume; its writes fail with ENOSPC, the call is `limit_exceeded`
  ("workspace full"), and the host sees at most 4 MiB in the workspace and in the image;
- test_each_subject_has_its_own_volume_and_files_persist: alice's full volume does not
  stop bob; alice's file is still there after her volume is unmounted and mounted again;
- test_a_workspace_with_files_falls_back_to_the_quota: a workspace that already holds
  files is never mounted over (its files stay visible); the call runs under the polled
  quota;
- test_check_says_how_workspaces_are_bounded: `sconnect check`'s line for unset, set
  and unparseable ``SCONNECT_WORKSPACE_VOLUME`` (runs everywhere).

The first three are skipped, with the reason, where volumes are unavailable (not root, no CAP_SYS_ADMIN,
no loop devices, no mkfs.ext4).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import sandbox
from engine import toolrun
from engine.config.model import SandboxNeeds, Tool
from engine.config.units import Bytes
from engine.server.app import prepare_state_dir
from engine.toolrun import run_tool, subject_workspace

VOLUME = 4 * 2**20
BIG_QUOTA = 2**30
FILL = "i=0; while [ $i -lt 48 ]; do i=$((i+1)); head -c 262144 /dev/zero > f$i || exit 1; done"


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A reachable state dir with volumes on; every volume under it unmounted afterwards."""
    problem = sandbox.volume_problem()
    if problem is not None:
        pytest.skip(f"workspace volumes unavailable here: {problem}")
    if sandbox.detect().namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {sandbox.detect().namespaces_problem()}")
    monkeypatch.setenv(toolrun.VOLUME_ENV, f"{VOLUME // 2**20}MiB")
    toolrun.volume_bytes.cache_clear()
    root = tempfile.mkdtemp(prefix="sconnect-voltest-")
    os.chmod(root, 0o755)
    path = Path(root) / "state"
    prepare_state_dir(path)
    try:
        yield path
    finally:
        workspace = path / "workspace"
        for entry in workspace.iterdir() if workspace.is_dir() else ():
            if sandbox.volume_mounted(str(entry)):
                sandbox.unmount_volume(str(entry))
        toolrun.volume_bytes.cache_clear()
        shutil.rmtree(root, ignore_errors=True)


def _sh(script: str) -> Tool:
    return Tool(
        name="writer", description="writes", parameters={"type": "object"}, permission_level=0,
        command=("/bin/sh", "-c", script),
        sandbox=SandboxNeeds(workspace="write", workspace_quota=Bytes(BIG_QUOTA), timeout=60),
    )  # fmt: skip


async def _call(tool: Tool, state: Path, subject: str, **arguments: Any) -> sandbox.Result:
    return await run_tool(tool, arguments, workspace=state / "workspace", work_root=state / "work",
                          subject=subject)


def _used(path: Path) -> int:
    return toolrun.disk_usage(path)


async def test_writing_past_the_volume_fails_at_its_size(state: Path) -> None:
    result = await _call(_sh(FILL), state, "alice")
    assert result.status == "limit_exceeded", result
    assert "No space left on device" in result.stderr_tail
    assert result.message.startswith(f"workspace full: its volume of {VOLUME} bytes is a hard bound"), result
    own = subject_workspace(state / "workspace", "alice")
    assert sandbox.volume_mounted(str(own))
    assert _used(own) <= VOLUME
    image = state / "workspace" / ".volumes" / f"{own.name}.img"
    assert image.stat().st_blocks * 512 <= VOLUME
    assert oct(own.stat().st_mode & 0o777) == oct(0o700) and own.stat().st_uid == sandbox.SANDBOX_UID


async def test_each_subject_has_its_own_volume_and_files_persist(state: Path) -> None:
    assert (await _call(_sh("echo kept > note"), state, "alice")).status == "ok"
    full = await _call(_sh(FILL), state, "alice")
    assert full.status == "limit_exceeded", full
    bob = await _call(_sh("head -c 1000000 /dev/zero > f && echo fine"), state, "bob")
    assert bob.status == "ok", bob
    own = subject_workspace(state / "workspace", "alice")
    sandbox.unmount_volume(str(own))
    assert not (own / "note").exists()  # the file lives in the image, not in the directory
    read = await _call(attrs.evolve(_sh("cat note"), name="reader"), state, "alice")
    assert read.status == "ok" and read.output == {"text": "kept\n"}, read


async def test_a_workspace_with_files_falls_back_to_the_quota(state: Path) -> None:
    own = subject_workspace(state / "workspace", "carol")
    (own / "old.txt").write_text("from before volumes")
    os.chown(own / "old.txt", sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
    result = await _call(_sh("cat old.txt"), state, "carol")
    assert result.status == "ok" and result.output == {"text": "from before volumes"}, result
    assert not sandbox.volume_mounted(str(own))


def test_check_says_how_workspaces_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli.check import _workspace_disk

    monkeypatch.delenv(toolrun.VOLUME_ENV, raising=False)
    toolrun.volume_bytes.cache_clear()
    assert _workspace_disk().endswith(f"polled (no hard bound: {toolrun.VOLUME_ENV} is not set)")
    monkeypatch.setenv(toolrun.VOLUME_ENV, "4MiB")
    toolrun.volume_bytes.cache_clear()
    problem = sandbox.volume_problem()
    if problem is None:
        assert _workspace_disk().startswith(f"a volume of {VOLUME} bytes per workspace (hard bound")
    else:
        assert f"volumes are unavailable: {problem}" in _workspace_disk()
    monkeypatch.setenv(toolrun.VOLUME_ENV, "lots")
    toolrun.volume_bytes.cache_clear()
    assert "no hard bound" in _workspace_disk()  # refused (and logged), never a crash
    toolrun.volume_bytes.cache_clear()
