"""The pool backend's contract: results, timeouts, cancellation, restarts, cleanup.

- test_python_function_and_command_results: a Python function tool and a command tool
  give the same Result shape as the other backends (backend "pool").
- test_each_call_gets_a_fresh_process_and_directory: sequential calls of one pool run
  in distinct processes with distinct, empty work directories.
- test_outputs_arrive_whole_however_they_come: a call waits for its status alone while
  its output fits in the pipes, and reads as the tool writes otherwise: output larger
  than a pipe written at once, output after a silence longer than the first wait,
  output written in pieces over a while, outputs closed early by a tool that goes on:
  each arrives whole, with its exit code.
- test_timeout_kills_the_call_and_the_pool_serves_on / test_cancellation_kills_the_call:
  a hanging call is killed (timeout status; on cancellation Cancelled propagates) and no
  process of it is left.
- test_a_dead_pool_is_restarted: SIGKILL of the pool's bubblewrap from the host; the
  next call starts a fresh pool and succeeds.
- test_nothing_outlives_open_pools / test_nothing_outlives_a_killed_engine: no process
  carrying the test's token is left after `open_pools()` ends, nor after the engine
  process holding a pool is SIGKILLed.
- test_idle_pools_beyond_the_bound_are_closed: with room for one pool, a second tool's
  pool closes the first (idle) one.
- test_a_pool_that_cannot_start_raises_spawn_error: a sandbox whose interpreter is missing
  gives SpawnError with bubblewrap's reason, inside `open_pools()` and without it.
- test_pool_is_refused_without_landlock_scoping: a host without Landlock ABI 6 gets
  IsolationUnavailable, never a weaker pool.
"""

# ruff: noqa: F811  (pytest fixtures imported from the conftest are parameters here)
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import attrs
import pytest
import trio

import sandbox
from tests.sandbox.conftest import PY, TOKEN_VAR, wait_until

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_python_function_and_command_results(runner_for: Any) -> None:
    tool = runner_for("pool")
    calc = tool.spec(python="sconnect_tools.calc:evaluate", python_packages=(os.path.join(ROOT, "sconnect_tools"),))
    async with sandbox.open_pools():
        result = await sandbox.run(calc, {"expression": "6*7"})
        failed = await sandbox.run(tool.spec(argv=(*PY, "import sys; sys.exit('bad')")), {})
    assert result.status == "ok" and result.output["result"] == 42 and result.backend == "pool", result
    assert failed.status == "error" and failed.exit_code == 1 and "bad" in failed.message


OUTPUTS = """
import os, sys, time
mode = sys.argv[1]
if mode == "large":
    sys.stdout.write("o" * 300_000); sys.stderr.write("e" * 100_000 + "end")
elif mode == "late":
    time.sleep(0.08); sys.stdout.write("late")
elif mode == "trickle":
    for i in range(20):
        sys.stdout.write(str(i % 10)); sys.stdout.flush(); time.sleep(0.005)
elif mode == "closed":
    sys.stdout.write("first"); sys.stdout.flush(); os.close(1); os.close(2); time.sleep(0.06)
    sys.exit(3)
"""


async def test_outputs_arrive_whole_however_they_come(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools():
        large, late, trickle, closed = [
            await sandbox.run(tool.spec(argv=(*PY, OUTPUTS, mode), max_stderr_bytes=200_000), {})
            for mode in ("large", "late", "trickle", "closed")
        ]
    assert large.status == "ok" and large.output["text"] == "o" * 300_000, large.message
    assert large.stderr_tail == "e" * 100_000 + "end"
    assert late.status == "ok" and late.output["text"] == "late", late
    assert trickle.status == "ok" and trickle.output["text"] == "01234567890123456789", trickle
    assert closed.exit_code == 3 and closed.output["text"] == "first", closed


async def test_each_call_gets_a_fresh_process_and_directory(runner_for: Any) -> None:
    code = "import json, os; print(json.dumps([os.getpid(), os.getcwd(), os.listdir('.')])); open('x', 'w').close()"
    spec = runner_for("pool").spec(argv=(*PY, code))
    async with sandbox.open_pools():
        seen = [(await sandbox.run(spec, {})).output for _ in range(6)]
    assert len({pid for pid, _, _ in seen}) == 6
    assert len({cwd for _, cwd, _ in seen}) == 6
    assert all(listing == [] for _, _, listing in seen)


async def test_timeout_kills_the_call_and_the_pool_serves_on(runner_for: Any, token_processes: Any) -> None:
    tool = runner_for("pool")
    hang = "import json, sys, time\nif json.load(sys.stdin)['hang']:\n    while True: time.sleep(1)\nprint(1)"
    async with sandbox.open_pools():
        slow = await sandbox.run(tool.spec(argv=(*PY, hang), timeout_s=1), {"hang": True})
        fast = await sandbox.run(tool.spec(argv=(*PY, hang), timeout_s=1), {"hang": False})
    assert slow.status == "timeout", slow
    assert fast.status == "ok" and fast.output == 1


async def test_cancellation_kills_the_call(runner_for: Any, shared_dir: str, token: str) -> None:
    marker = os.path.join(shared_dir, "meet")
    os.mkdir(marker)
    os.chmod(marker, 0o777)
    started = os.path.join(marker, "started")
    code = f"import time\nopen({started!r}, 'w').close()\nwhile True: time.sleep(1)"
    spec = runner_for("pool").spec(argv=(*PY, code), writable_paths=(marker,), timeout_s=60)
    async with sandbox.open_pools():
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sandbox.run, spec, {})
                assert await trio.to_thread.run_sync(wait_until, lambda: os.path.exists(started))
                scope.cancel()
        assert scope.cancelled_caught


async def test_a_dead_pool_is_restarted(runner_for: Any) -> None:
    spec = runner_for("pool").spec(argv=("/bin/echo", "hi"))
    async with sandbox.open_pools() as pools:
        assert (await sandbox.run(spec, {})).status == "ok"
        (first,) = pools.pools.values()
        assert first.child is not None
        os.kill(first.child.pid, signal.SIGKILL)
        assert await trio.to_thread.run_sync(wait_until, lambda: first.dead)
        again = await sandbox.run(spec, {})
        (second,) = pools.pools.values()
    assert again.status == "ok" and second is not first


async def test_nothing_outlives_open_pools(runner_for: Any, token_processes: Any) -> None:
    spec = runner_for("pool").spec(argv=("/bin/echo", "hi"))
    async with sandbox.open_pools():
        await sandbox.run(spec, {})
        assert token_processes()  # the fork server and its ready workers carry the token
    assert wait_until(lambda: token_processes() == [])


ENGINE = r"""
import sys, trio, sandbox
async def main():
    async with sandbox.open_pools():
        spec = sandbox.Spec(argv=("/bin/echo", "hi"), isolation="pool", work_root=sys.argv[1],
                            env={"%s": sys.argv[2]})
        assert (await sandbox.run(spec, {})).status == "ok"
        print("ready", flush=True)
        await trio.sleep_forever()
trio.run(main)
""".replace("%s", TOKEN_VAR)


def test_nothing_outlives_a_killed_engine(work_root: str, token: str, token_processes: Any) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, work_root, token], stdout=subprocess.PIPE, env=env)
    try:
        assert engine.stdout is not None and engine.stdout.readline().strip() == b"ready"
        assert token_processes()
        engine.kill()
        engine.wait()
        assert wait_until(lambda: token_processes() == [])
    finally:
        engine.kill()
        engine.wait()


def test_pool_is_refused_without_landlock_scoping(runner_for: Any) -> None:
    spec = runner_for("pool").spec(argv=("/bin/true",))
    old = attrs.evolve(sandbox.detect(), landlock_abi=5)
    with pytest.raises(sandbox.IsolationUnavailable, match="ABI >= 6"):
        sandbox.backend_for(spec, old)


async def test_idle_pools_beyond_the_bound_are_closed(runner_for: Any) -> None:
    tool = runner_for("pool")
    async with sandbox.open_pools(max_pools=1) as pools:
        assert (await sandbox.run(tool.spec(argv=("/bin/echo", "a")), {})).output == {"text": "a\n"}
        (first,) = pools.pools.values()
        assert (await sandbox.run(tool.spec(argv=("/bin/echo", "b")), {})).output == {"text": "b\n"}
        (second,) = pools.pools.values()
        assert second is not first
        assert await trio.to_thread.run_sync(wait_until, lambda: first.dead)


async def test_a_pool_that_cannot_start_raises_spawn_error(runner_for: Any) -> None:
    spec = runner_for("pool").spec(argv=("/bin/true",))
    broken = sandbox.backend_for(spec, attrs.evolve(sandbox.detect(), python="/nonexistent/python3"))
    async with sandbox.open_pools():
        with pytest.raises(sandbox.SpawnError, match="did not start: .*nonexistent"):
            await sandbox.run(spec, {}, backend=broken)
    with pytest.raises(sandbox.SpawnError, match="did not start"):
        await sandbox.run(spec, {}, backend=broken)  # a temporary pool set, the same error
