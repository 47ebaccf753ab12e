"""No descriptor of the engine reaches a tool, without the engine scanning its own.

The launcher is spawned with a close-from action (`sandbox._process`): every
descriptor above the ones passed is closed in the child, inheritable or not.

- test_inheritable_engine_descriptors_do_not_reach_the_tool (and ..._a_pool_call, whose
  bubblewrap is spawned the same way): the engine holds a secret
  file open on an *inheritable* descriptor (and many more plain ones); a tool, on every
  backend, lists its /proc/self/fd, tries every descriptor from 3 to 1023 and reads
  its parent's and pid 1's /proc/PID/fd: it finds no descriptor beyond 0-2 and never
  the secret.
- test_the_spawner_never_lists_its_descriptors: where glibc has the close-from action
  (>= 2.34), spawning a launcher never lists /proc/self/fd (seen through an audit hook).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import sandbox
from sandbox import _process

PROBE = r"""
import json, os
out = {"fds": sorted(int(n) for n in os.listdir("/proc/self/fd")), "secret": False, "open": []}
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    out["open"].append(fd)
    try:
        if b"engine-secret" in os.pread(fd, 100, 0):
            out["secret"] = True
    except OSError:
        pass
print(json.dumps(out))
"""


@pytest.fixture
def secret_descriptors(shared_dir: str) -> Iterator[int]:
    path = os.path.join(shared_dir, "engine-secret.txt")
    with open(path, "w") as handle:
        handle.write("engine-secret")
    os.chmod(path, 0o644)  # readable by the tool's uid: only the descriptor keeps it out
    fd = os.open(path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    others = [os.open(path, os.O_RDONLY) for _ in range(200)]
    try:
        yield fd
    finally:
        for each in (fd, *others):
            os.close(each)


async def test_inheritable_engine_descriptors_do_not_reach_the_tool(
    tool: Any, secret_descriptors: int, shared_dir: str
) -> None:
    if tool.isolation == "namespaces" and sandbox.detect().namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {sandbox.detect().namespaces_problem()}")
    # the secret file itself is out of the tool's sight: only a leaked descriptor could read it
    result = await tool.py(PROBE)
    assert result.status == "ok", result
    assert result.output["secret"] is False, result.output
    assert result.output["open"] == [], result.output
    assert set(result.output["fds"]) <= {0, 1, 2, 3}, result.output  # 3: listdir's own


async def test_inheritable_engine_descriptors_do_not_reach_a_pool_call(
    runner_for: Any, secret_descriptors: int
) -> None:
    if sandbox.detect().pool_problem() is not None:
        pytest.skip(f"no pool here: {sandbox.detect().pool_problem()}")
    result = await runner_for("pool").py(PROBE)
    assert result.status == "ok", result
    assert result.output["secret"] is False and result.output["open"] == [], result.output


_listed: list[str] | None = None  # set while the test below watches


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _listed is not None and event in ("os.listdir", "os.scandir") and args and "/proc/self/fd" in str(args[0]):
        _listed.append(str(args[0]))


def test_the_spawner_never_lists_its_descriptors() -> None:
    global _listed
    if _process._native() is None:
        pytest.skip("glibc without posix_spawn_file_actions_addclosefrom_np: the scan is the fallback")
    _listed = listed = []
    sys.addaudithook(_hook)  # cannot be removed; inert once _listed is None again
    try:
        _spawn_true()
    finally:
        _listed = None
    assert listed == []
    # control: the fallback scan is seen by the same hook
    _listed = listed = []
    try:
        _process._inheritable_closes({0, 1, 2})
    finally:
        _listed = None
    assert listed == ["/proc/self/fd"]


def _spawn_true() -> None:
    child = _process.spawn("/bin/true", ["/bin/true"], {}, fds={})
    try:
        pid, status = os.waitpid(child.pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        for fd in (child.pidfd, child.stdin, child.stdout, child.stderr):
            os.close(fd)
