"""A memory cgroup per call bounds the call as a whole (issue 11 item 7).

RLIMIT_AS bounds each process, not the call: a tool forking several children, each
under RLIMIT_AS, could hold several times its budget. Where a memory cgroup is in force
(cgroup v2 delegated to us, or cgroup v1 as root) each call runs in its own one, limited
to the tool's memory budget. Each test runs on the namespaces, process and pool backends
(the pool's worker is moved by its host pid before it gets its go-ahead):

- test_children_summing_past_the_budget_are_killed: a 128 MiB tool forks four children
  that each touch 64 MiB (each well under RLIMIT_AS) and hold it at once; the kernel
  OOM-kills inside the call's cgroup and the result is `limit_exceeded`, "killed: memory
  limit";
- test_the_tool_starts_inside_its_cgroup: the tool's very first look at
  /proc/self/cgroup already shows the call's cgroup (it was moved before it ran);
- test_no_cgroup_is_left_behind: after a normal call, a timeout and a cancelled call,
  no per-call cgroup of this process remains;
- test_warm_pool_gives_each_call_its_own_cgroup: in one warm pool sandbox, successive
  calls each start in a cgroup of their own, removed right after the call has returned
  (the engine's next turn: the call's processes are all dead when it returns); while the pool lives the
  only other cgroups of ours are those of its ready workers (made as each worker
  arrives, before it may take a call): at most K per pool, each holding one process that
  is still the fork server's program, never a tool; the memory hoard is killed in its
  cgroup with its peak (over 100 MiB: two children's at once, more than any one
  process's RSS) reported, and the pool serves the next call;
- test_check_says_which_bound_is_in_force: the `sconnect check` / start-up line names it;
- test_a_killed_engines_cgroups_are_removed_by_the_next: an engine holding a warm pool
  is SIGKILLed, which leaves its ready workers' cgroups behind (empty once its sandbox
  died); what the next engine's probe runs (`_cgroup.remove_stale`) removes them, and
  never a live engine's cgroup.

Skipped, with the reason, where the host gives no memory cgroup (not root under cgroup
v1, or no delegated v2 memory controller).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import sandbox
from sandbox import _cgroup
from tests.memory_cgroups import controller as _controller
from tests.memory_cgroups import ours as _ours
from tests.sandbox.conftest import (  # noqa: F401  (fixtures)
    Runner,
    backend,
    no_leftovers,
    runner_for,
    shared_dir,
    token,
    tool,
    wait_until,
    work_root,
)

BUDGET = 128 * 2**20
CHUNK = 64 * 2**20
HOARD = f"""
import os, select, sys, time
r, w = os.pipe()
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        block = bytearray({CHUNK})
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"1")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
os.close(w)
ready = 0
while ready < len(kids):
    if select.select([r], [], [], 0.05)[0]:
        ready += len(os.read(r, 8))
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid and os.WIFSIGNALED(status):
        print("a child was killed by signal", os.WTERMSIG(status))
        sys.exit(3)
print("held", ready * {CHUNK}, "bytes")
for pid in kids:
    os.kill(pid, 9)
"""


def _held(controller: _cgroup.Controller) -> bool:
    """Whether one of this process's call cgroups holds a process."""
    for name in _ours(controller):
        with open(os.path.join(controller.parent, name, "cgroup.procs")) as handle:  # noqa: ASYNC230
            if handle.read().strip():
                return True
    return False


@pytest.fixture(params=("namespaces", "process", "pool"))
def backend(request: pytest.FixtureRequest) -> str:  # noqa: F811  (the pool added)
    return str(request.param)


def _usable(isolation: str) -> None:
    detected = sandbox.detect()
    problem = {"namespaces": detected.namespaces_problem(), "pool": detected.pool_problem()}.get(isolation)
    if problem is not None:
        pytest.skip(f"{isolation} backend unusable here: {problem}")


async def test_children_summing_past_the_budget_are_killed(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    _controller()
    result = await tool.py(HOARD, memory_bytes=BUDGET, max_processes=64, timeout_s=60)
    assert result.status == "limit_exceeded", result
    assert result.message.startswith(f"killed: memory limit of {BUDGET} bytes"), result
    assert "held" not in str(result.output)


async def test_the_tool_starts_inside_its_cgroup(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    controller = _controller()
    result = await tool.run(argv=("/bin/cat", "/proc/self/cgroup"), memory_bytes=BUDGET)
    assert result.status == "ok", result
    lines = result.output["text"].splitlines()
    wanted = "memory" if controller.version == 1 else ""
    line = next(line for line in lines if line.split(":")[1] == wanted)
    assert os.path.basename(line.split(":", 2)[2]).startswith(f"sconnect-{os.getpid()}-"), lines


async def test_no_cgroup_is_left_behind(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    controller = _controller()
    assert _ours(controller) == []
    done = await tool.run(argv=("/bin/true",), memory_bytes=BUDGET)
    assert done.status == "ok", done
    assert _ours(controller) == []
    late = await tool.run(argv=("/bin/sleep", "30"), memory_bytes=BUDGET, timeout_s=0.5)
    assert late.status == "timeout", late
    assert _ours(controller) == []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(tool.run, argv=("/bin/sleep", "30"), memory_bytes=BUDGET))
        # Wait until the call's cgroup holds a process, then cancel the call.
        with trio.fail_after(30):
            while not _held(controller):  # noqa: ASYNC110 (cgroupfs offers no event to wait on)
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert _ours(controller) == []


def _only_ready_workers(controller: _cgroup.Controller, pools: sandbox.PoolSet) -> None:
    """Every cgroup of ours holds one waiting pool worker at most (no tool ran there)."""
    names = _ours(controller)
    assert len(names) <= attrs.fields(sandbox.PoolBackend).workers.default * len(pools.pools), names
    for name in names:
        with open(os.path.join(controller.parent, name, "cgroup.procs")) as handle:  # noqa: ASYNC230
            pids = handle.read().split()
        assert len(pids) <= 1, (name, pids)
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:  # noqa: ASYNC230
                    command = handle.read()
            except OSError:
                continue  # gone meanwhile (the pool let it go)
            assert b"import _forkserver" in command, (name, command)


def _own_cgroup(result: sandbox.Result, controller: _cgroup.Controller) -> str:
    """The call's cgroup name, from the tool's output of /proc/self/cgroup."""
    assert result.status == "ok", result
    wanted = "memory" if controller.version == 1 else ""
    lines = result.output["text"].splitlines()
    line = next(line for line in lines if line.split(":")[1] == wanted)
    return os.path.basename(line.split(":", 2)[2])


async def test_warm_pool_gives_each_call_its_own_cgroup(runner_for: Any) -> None:  # noqa: F811
    _usable("pool")
    controller = _controller()
    pool = runner_for("pool")
    async with sandbox.open_pools() as pools:
        seen = []
        for _ in range(3):
            result = await pool.run(argv=("/bin/cat", "/proc/self/cgroup"), memory_bytes=BUDGET)
            seen.append(_own_cgroup(result, controller))
            assert result.peak_memory_bytes > 0, result
            # Removed right after its call has returned (empty by then: the status came
            # once every process of the call was dead), before the engine next waits.
            await trio.testing.wait_all_tasks_blocked()
            assert seen[-1] not in _ours(controller)
            _only_ready_workers(controller, pools)
        assert all(name.startswith(f"sconnect-{os.getpid()}-") for name in seen), seen
        assert len(set(seen)) == len(seen), seen
        hoard = await pool.py(HOARD, memory_bytes=BUDGET, max_processes=64, timeout_s=60)
        assert hoard.status == "limit_exceeded", hoard
        assert hoard.peak_memory_bytes > 100 * 2**20, hoard
        _only_ready_workers(controller, pools)
        after = await pool.run(argv=("/bin/cat", "/proc/self/cgroup"), memory_bytes=BUDGET)
        assert _own_cgroup(after, controller) not in seen
    assert _ours(controller) == []


def test_check_says_which_bound_is_in_force() -> None:
    line = sandbox.detect().memory_cgroup
    found = _cgroup.probe()
    if found.controller is None:
        assert line.startswith("memory: rlimit + sized tmpfs only (no delegated cgroup"), line
        return
    version = found.controller.version
    assert line.startswith("memory: cgroup v2" if version == 2 else "memory: cgroup v1 (memory controller"), line
    assert line in sandbox.detect().summary


KILLED_ENGINE = r"""
import sys, trio, sandbox
async def main():
    async with sandbox.open_pools():
        spec = sandbox.Spec(argv=("/bin/true",), isolation="pool", work_root=sys.argv[1], memory_bytes=BUDGET)
        assert (await sandbox.run(spec, {})).status == "ok"
        print("ready", flush=True)
        await trio.sleep_forever()
trio.run(main)
""".replace("BUDGET", str(BUDGET))


def test_a_killed_engines_cgroups_are_removed_by_the_next(work_root: str) -> None:  # noqa: F811
    _usable("pool")
    controller = _controller()
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    engine = subprocess.Popen([sys.executable, "-c", KILLED_ENGINE, work_root], stdout=subprocess.PIPE, env=env)
    prefix = f"sconnect-{engine.pid}-"
    try:
        assert engine.stdout is not None and engine.stdout.readline().strip() == b"ready"
        assert any(name.startswith(prefix) for name in os.listdir(controller.parent))  # its ready workers'
    finally:
        engine.kill()
        engine.wait()

    def left() -> list[str]:
        _cgroup.remove_stale(controller.parent)  # what the next engine's probe does
        return [name for name in os.listdir(controller.parent) if name.startswith(prefix)]

    mine = _cgroup.make(controller, BUDGET)  # a live engine's cgroup: never touched
    try:
        # The sandbox dies with the engine (--die-with-parent); its cgroups empty as it goes.
        assert wait_until(lambda: left() == []), left()
        assert os.path.isdir(mine.path)
    finally:
        os.rmdir(mine.path)
