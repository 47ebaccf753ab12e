"""Memory limit bypass through RAM-backed scratch space (issue 11 item 7).

tmpfs pages are not charged to RLIMIT_AS, so an unsized /tmp let a 512 MiB tool put
2.1 GiB in RAM. Each test runs a 64 MiB-budget tool that writes 200 MiB:

- test_writing_past_the_scratch_space_is_stopped: into /tmp (namespaces), /dev/shm and
  its work dir (both backends); each write stops with ENOSPC after at most the mount's
  size (a quarter, or a sixteenth, of the budget) and the call is `limit_exceeded`;
- test_dev_is_read_only: a tool cannot create files in /dev (an unsized tmpfs before);
- test_scratch_sizes_follow_the_budget: `df` inside the sandbox shows the sizes.
"""

from __future__ import annotations

import pytest

import sandbox
from sandbox._limits import tmpfs_sizes
from tests.sandbox.conftest import (  # noqa: F401  (fixtures)
    Runner,
    backend,
    no_leftovers,
    shared_dir,
    token,
    tool,
    work_root,
)

BUDGET = 64 * 2**20
WRITE = "head -c 209715200 /dev/zero > {path}/blob; status=$?; du -sb {path}/blob; exit $status"


def _usable(isolation: str) -> None:
    problem = sandbox.detect().namespaces_problem()
    if isolation == "namespaces" and problem is not None:
        pytest.skip(f"namespaces backend unusable here: {problem}")


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm", "."])
async def test_writing_past_the_scratch_space_is_stopped(tool: Runner, where: str) -> None:  # noqa: F811
    _usable(tool.isolation)
    result = await tool.run(argv=("/bin/sh", "-c", WRITE.format(path=where)), memory_bytes=BUDGET)
    if tool.isolation == "process" and where == "/tmp":
        # The process backend has no private /tmp: Landlock keeps the host's out of reach.
        assert result.status == "error", result
        assert "Permission denied" in result.stderr_tail or "Read-only" in result.stderr_tail, result
        return
    assert result.status == "limit_exceeded", result
    assert "No space left on device" in result.stderr_tail
    written = int(result.output["text"].split()[0])
    limit = max(tmpfs_sizes(tool.spec(argv=("x",), memory_bytes=BUDGET)).values())
    assert written <= limit <= BUDGET // 4


async def test_dev_is_read_only(ns_tool: Runner) -> None:
    _usable("namespaces")
    result = await ns_tool.run(argv=("/bin/sh", "-c", "echo x > /dev/planted"))
    assert result.status == "error"
    assert "Read-only file system" in result.stderr_tail


async def test_scratch_sizes_follow_the_budget(ns_tool: Runner) -> None:
    _usable("namespaces")
    result = await ns_tool.run(argv=("/bin/df", "-B1", "--output=target,size", "/tmp", "/dev/shm", "."),
                               memory_bytes=BUDGET)  # fmt: skip
    assert result.status == "ok", result
    sizes = dict(line.split() for line in result.output["text"].splitlines()[1:])
    assert int(sizes["/tmp"]) == BUDGET // 4
    assert int(sizes["/dev/shm"]) == BUDGET // 16
    assert len(sizes) == 3 and all(int(size) <= BUDGET // 4 for size in sizes.values())


@pytest.fixture
def ns_tool(token: str, work_root: str) -> Runner:  # noqa: F811
    return Runner("namespaces", token, work_root)
