"""`sandbox.run(..., go=...)`: the caller's go-ahead comes before the tool gets anything.

Each test runs a real tool over every backend (namespaces, process, pool; the pool
inside its own `open_pools()`). The tool is `/bin/sh -c 'cat > MARKER'`: the marker file
appears as soon as the tool runs code of its own, and holds the input it was given.

- test_the_tool_waits_for_go: while `go` runs (a window in which a tool started too
  early would show), no marker exists; after it returns the tool runs and the marker
  holds the arguments. `go` is awaited exactly once.
- test_go_raising_runs_nothing: `go` raises; the very exception propagates, the marker
  never appears, and no process of the call is left — the pool's taken worker is gone
  (reaped) by the time `run` raises, while the pool lives on and serves the next call.
- test_cancel_in_go_runs_nothing: the call is cancelled while in `go`: nothing ran,
  nothing is left.
"""

# ruff: noqa: F811  (pytest fixtures imported from the conftest are parameters here)
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import sandbox
from tests.sandbox.conftest import Runner, children_of, give_to_sandbox, wait_until

ISOLATIONS = ("namespaces", "process", "pool")


class Refused(Exception):
    """What the test's `go` raises."""


@pytest.fixture(params=ISOLATIONS)
def isolation(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "pool" and sandbox.detect().pool_problem() is not None:
        pytest.skip(f"no pool here: {sandbox.detect().pool_problem()}")
    return name


@pytest.fixture
def out_dir(shared_dir: str) -> str:
    path = os.path.join(shared_dir, "out")
    os.mkdir(path, 0o755)
    give_to_sandbox(path)
    return path


@contextlib.asynccontextmanager
async def pools_for(isolation: str) -> AsyncIterator[sandbox.PoolSet | None]:
    if isolation != "pool":
        yield None
        return
    async with sandbox.open_pools() as pools:
        yield pools


def _spec(isolation: str, token: str, work_root: str, out_dir: str) -> tuple[sandbox.Spec, str]:
    marker = os.path.join(out_dir, "marker")
    spec = Runner(isolation, token, work_root).spec(
        argv=("/bin/sh", "-c", f"cat > {marker}"), writable_paths=(out_dir,)
    )
    return spec, marker


async def test_the_tool_waits_for_go(isolation: str, token: str, work_root: str, out_dir: str) -> None:
    spec, marker = _spec(isolation, token, work_root, out_dir)
    seen: list[bool] = []

    async def go() -> None:
        # Bounded window: a tool let go before `go` returns would create the marker here.
        appeared = await trio.to_thread.run_sync(lambda: wait_until(lambda: os.path.exists(marker), bound_s=0.5))
        seen.append(appeared)

    async with pools_for(isolation):
        result = await sandbox.run(spec, {"asked": 42}, go=go)
    assert seen == [False], "the tool ran before go returned"
    assert result.status == "ok", result
    with open(marker) as handle:
        assert json.load(handle) == {"asked": 42}


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


async def test_go_raising_runs_nothing(
    isolation: str, token: str, work_root: str, out_dir: str, token_processes: Any
) -> None:
    spec, marker = _spec(isolation, token, work_root, out_dir)
    before = set(children_of(os.getpid()))
    raised = Refused("the decision could not be recorded")
    during: list[int] = []
    calls = 0

    async def go() -> None:
        nonlocal calls
        calls += 1
        during.extend(token_processes())
        raise raised

    async with pools_for(isolation) as pools:
        with pytest.raises(Refused) as caught:
            await sandbox.run(spec, {"asked": 1}, go=go)
        assert caught.value is raised and calls == 1
        assert not os.path.exists(marker), "the tool ran although go raised"
        if pools is None:
            # killed and reaped before `run` raised: no child of ours is left
            assert set(children_of(os.getpid())) - before == set()
        else:
            # the fork server and its ready workers carry the token; the taken worker
            # is gone, the others serve on
            assert any(_gone(pid) for pid in during), f"the taken worker lives on: {during}"
            ok = await sandbox.run(spec, {"then": 2})
            assert ok.status == "ok", ok
            with open(marker) as handle:
                assert json.load(handle) == {"then": 2}


async def test_cancel_in_go_runs_nothing(isolation: str, token: str, work_root: str, out_dir: str) -> None:
    spec, marker = _spec(isolation, token, work_root, out_dir)
    before = set(children_of(os.getpid()))
    in_go = trio.Event()

    async def go() -> None:
        in_go.set()
        await trio.sleep_forever()

    async with pools_for(isolation):
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                await sandbox.run(spec, {"asked": 1}, go=go)
                raise AssertionError("run returned although cancelled in go")

            nursery.start_soon(call)
            await in_go.wait()
            nursery.cancel_scope.cancel()
        assert not os.path.exists(marker), "the tool ran although cancelled in go"
    assert set(children_of(os.getpid())) - before == set()
