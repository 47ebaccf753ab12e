"""The pool's admitter: the one thread that puts arriving workers in their memory cgroups.

Each test uses real processes and the host's real memory cgroups (skipped, with the
reason, where the host gives none: not root under cgroup v1, no delegated v2 memory
controller):

- test_jobs_queued_together_are_each_admitted_to_a_cgroup_of_their_own: three processes
  queued before the admitter's thread runs (so it takes them as one batch) each end up
  in a fresh cgroup of their own, limited to the budget; every outcome is delivered on
  the event loop (not in the thread) and every pidfd is closed;
- test_a_waiting_caller_is_woken_by_the_delivery: a task waiting inside `wants()` gets
  its outcome without anything else happening on the loop;
- test_stop_finishes_what_was_queued: jobs queued just before `stop` are still admitted
  and delivered before `run` returns;
- test_a_gone_process_is_not_admitted: a process reaped before its turn is reported as a
  problem (no host pid), its cgroup made but empty;
- test_pidfd_pid_with_and_without_the_ioctl: PIDFD_GET_INFO and the fdinfo fallback give
  the same host pid, and None once the process is reaped;
- test_cgroups_are_made_after_their_parent_is_made_again: cgroups are made relative to a
  descriptor of their parent, opened once; when that parent is removed and made again
  the next cgroup still lands in it;
- test_concurrent_pool_calls_each_start_in_their_own_cgroup: twelve calls of one pool at
  once (workers arrive and are admitted while others wait) each see a distinct cgroup of
  this engine in /proc/self/cgroup, each removed once its call has returned and the
  engine's tasks have run (the removal follows the answer), none left at the end;
- test_closing_pools_while_workers_are_admitted_leaves_no_cgroup: leaving `open_pools()`
  right after a call, while the pool's refill workers are still arriving and being
  admitted, and cancelling it likewise, leave no cgroup of this engine behind;
- test_the_admitter_thread_runs_as_batch_and_is_given_back_as_it_was: while it runs, the
  admitter's thread is SCHED_BATCH (woken by a submit, it does not preempt the event
  loop); once `run` returns, trio's reused thread is SCHED_OTHER again (needs no cgroup).
"""

# ruff: noqa: F811  (pytest fixtures imported from the conftest are parameters here)
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

import sandbox
from sandbox import _cgroup
from tests.memory_cgroups import controller as _controller
from tests.memory_cgroups import ours as _ours

BUDGET = 96 * 2**20
SLEEPER = [sys.executable, "-S", "-c", "import sys; sys.stdin.read()"]


def _cgroup_of(pid: int, controller: _cgroup.Controller) -> str:
    wanted = "memory" if controller.version == 1 else ""
    with open(f"/proc/{pid}/cgroup") as handle:
        for line in handle.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == wanted or (wanted and wanted in controllers.split(",")):
                return path
    raise AssertionError(f"no {wanted or 'v2'} line in /proc/{pid}/cgroup")


def _limit_of(cgroup: _cgroup.CallCgroup) -> int:
    name = "memory.max" if cgroup.version == 2 else "memory.limit_in_bytes"
    with open(os.path.join(cgroup.path, name)) as handle:
        return int(handle.read())


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Up to a few host processes that wait on stdin; killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _start(sleepers: list[subprocess.Popen[bytes]], count: int) -> list[subprocess.Popen[bytes]]:
    for _ in range(count):
        sleepers.append(subprocess.Popen(SLEEPER, stdin=subprocess.PIPE))
    return sleepers[-count:]


async def _remove_all(jobs: list[_cgroup.Admission], sleepers: list[subprocess.Popen[bytes]]) -> None:
    for process in sleepers:
        process.kill()
        process.wait()
    for job in jobs:
        if job.cgroup is not None:
            await _cgroup.remove(job.cgroup)


async def test_jobs_queued_together_are_each_admitted_to_a_cgroup_of_their_own(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    controller = _controller()
    processes = _start(sleepers, 3)
    delivered: list[tuple[_cgroup.Admission, bool]] = []
    all_back = trio.Event()

    def deliver(job: _cgroup.Admission) -> None:
        delivered.append((job, threading.current_thread() is threading.main_thread()))
        if len(delivered) == len(processes):
            all_back.set()

    admitter = _cgroup.Admitter()
    jobs = [_cgroup.Admission(controller, BUDGET, os.pidfd_open(process.pid), deliver) for process in processes]
    for job in jobs:
        admitter.submit(job)  # queued before the thread runs: it takes all three at once
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(admitter.run)
            with trio.fail_after(30), admitter.wants():
                await all_back.wait()
            admitter.stop()
        assert [job for job, _ in delivered] == jobs
        assert all(on_loop for _, on_loop in delivered), "delivered in the thread"
        paths = set()
        for job, process in zip(jobs, processes, strict=True):
            assert job.problem is None and job.cgroup is not None, job
            assert not _fd_open(job.pidfd) or os.readlink(f"/proc/self/fd/{job.pidfd}") != "anon_inode:[pidfd]"
            assert os.path.basename(_cgroup_of(process.pid, controller)) == job.cgroup.name
            assert job.cgroup.pids() == [process.pid]
            assert _limit_of(job.cgroup) == BUDGET
            paths.add(job.cgroup.path)
        assert len(paths) == len(jobs)
    finally:
        await _remove_all(jobs, sleepers)
    assert _ours(controller) == []


async def test_a_waiting_caller_is_woken_by_the_delivery(sleepers: list[subprocess.Popen[bytes]]) -> None:
    controller = _controller()
    (process,) = _start(sleepers, 1)
    done = trio.Event()
    admitter = _cgroup.Admitter()
    job = _cgroup.Admission(controller, BUDGET, os.pidfd_open(process.pid), lambda _: done.set())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(admitter.run)
            with trio.fail_after(30), admitter.wants():
                admitter.submit(job)
                await done.wait()
            admitter.stop()
        assert job.cgroup is not None and job.cgroup.pids() == [process.pid]
    finally:
        await _remove_all([job], sleepers)
    assert _ours(controller) == []


async def test_stop_finishes_what_was_queued(sleepers: list[subprocess.Popen[bytes]]) -> None:
    controller = _controller()
    processes = _start(sleepers, 2)
    delivered: list[_cgroup.Admission] = []
    admitter = _cgroup.Admitter()
    jobs = [_cgroup.Admission(controller, BUDGET, os.pidfd_open(p.pid), delivered.append) for p in processes]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(admitter.run)
            for job in jobs:
                admitter.submit(job)
            admitter.stop()
            admitter.stop()  # a second stop changes nothing
        assert delivered == jobs  # `run` returned: everything queued before stop is back
        for job, process in zip(jobs, processes, strict=True):
            assert job.cgroup is not None and job.cgroup.pids() == [process.pid]
    finally:
        await _remove_all(jobs, sleepers)
    assert _ours(controller) == []


async def test_a_gone_process_is_not_admitted(sleepers: list[subprocess.Popen[bytes]]) -> None:
    controller = _controller()
    (process,) = _start(sleepers, 1)
    pidfd = os.pidfd_open(process.pid)
    process.kill()
    process.wait()  # reaped: its pid may belong to anyone now
    delivered: list[_cgroup.Admission] = []
    admitter = _cgroup.Admitter()
    job = _cgroup.Admission(controller, BUDGET, pidfd, delivered.append)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(admitter.run)
            admitter.submit(job)
            admitter.stop()
        assert delivered == [job]
        assert job.problem == "cannot find the worker's host pid", job
        assert job.cgroup is not None and job.cgroup.pids() == []
    finally:
        await _remove_all([job], sleepers)
    assert _ours(controller) == []


def test_pidfd_pid_with_and_without_the_ioctl(
    sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    (process,) = _start(sleepers, 1)
    pidfd = os.pidfd_open(process.pid)
    try:
        assert _cgroup.pidfd_pid(pidfd) == process.pid
        with monkeypatch.context() as patched:
            patched.setattr(_cgroup, "_pidfd_info", False)  # as on a kernel before 6.13
            assert _cgroup.pidfd_pid(pidfd) == process.pid
            process.kill()
            process.wait()
            assert _cgroup.pidfd_pid(pidfd) is None
        assert _cgroup.pidfd_pid(pidfd) is None
    finally:
        os.close(pidfd)


async def test_cgroups_are_made_after_their_parent_is_made_again() -> None:
    controller = _controller()
    parent = os.path.join(controller.parent, f"sconnect-{os.getpid()}-parent")
    os.mkdir(parent)
    try:
        if controller.version == 2:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as handle:
                handle.write("+memory")
        inner = _cgroup.Controller(controller.version, parent)
        first = _cgroup.make(inner, BUDGET)
        assert os.path.dirname(first.path) == parent and os.path.isdir(first.path)
        await _cgroup.remove(first)
        os.rmdir(parent)
        os.mkdir(parent)  # the same name, a new directory: the descriptor held is stale
        if controller.version == 2:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as handle:
                handle.write("+memory")
        second = _cgroup.make(inner, BUDGET)
        assert os.path.isdir(second.path), second
        assert _limit_of(second) == BUDGET
        await _cgroup.remove(second)
        assert [name for name in os.listdir(parent) if name.startswith("sconnect-")] == []
    finally:
        os.rmdir(parent)
    assert _ours(controller) == []


pool_only = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)


@pool_only
async def test_concurrent_pool_calls_each_start_in_their_own_cgroup(runner_for: Any) -> None:
    controller = _controller()
    pool = runner_for("pool")
    names: list[str] = []

    async def one() -> None:
        result = await pool.run(argv=("/bin/cat", "/proc/self/cgroup"), memory_bytes=BUDGET)
        assert result.status == "ok", result
        wanted = "memory" if controller.version == 1 else ""
        line = next(line for line in result.output["text"].splitlines() if line.split(":")[1] == wanted)
        name = os.path.basename(line.split(":", 2)[2])
        # removed right after the call returned, before the engine next waits for anything
        await trio.testing.wait_all_tasks_blocked()
        assert name not in _ours(controller)
        names.append(name)

    async with sandbox.open_pools():
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
    assert len(names) == 12
    assert all(name.startswith(f"sconnect-{os.getpid()}-") for name in names), names
    assert len(set(names)) == len(names), names
    assert _ours(controller) == []


@pool_only
async def test_closing_pools_while_workers_are_admitted_leaves_no_cgroup(runner_for: Any) -> None:
    controller = _controller()
    pool = runner_for("pool")
    for _ in range(3):
        async with sandbox.open_pools():
            result = await pool.run(argv=("/bin/true",), memory_bytes=BUDGET)
            assert result.status == "ok", result
            # leaving now: the refill the call asked for is on its way or being admitted
        assert _ours(controller) == []
    for _ in range(3):
        async with trio.open_nursery() as nursery:

            async def calls_then_waits() -> None:
                async with sandbox.open_pools():
                    assert (await pool.run(argv=("/bin/true",), memory_bytes=BUDGET)).status == "ok"
                    nursery.cancel_scope.cancel()
                    await trio.sleep_forever()

            nursery.start_soon(calls_then_waits)
        assert _ours(controller) == []


async def test_the_admitter_thread_runs_as_batch_and_is_given_back_as_it_was() -> None:
    admitter = _cgroup.Admitter()
    async with trio.open_nursery() as nursery:
        await nursery.start(admitter.run)
        for _ in range(1000):  # the thread names itself as it starts, soon after `run` reports started
            threads = [t for t in threading.enumerate() if t.name.startswith("_serve from sandbox")]
            if threads and threads[0].native_id is not None and os.sched_getscheduler(threads[0].native_id) \
                    == os.SCHED_BATCH:
                break
            await trio.sleep(0.01)
        assert len(threads) == 1, [t.name for t in threading.enumerate()]
        tid = threads[0].native_id
        assert tid is not None and os.sched_getscheduler(tid) == os.SCHED_BATCH
        admitter.stop()
    try:
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
    except ProcessLookupError:
        pass  # the thread ended rather than going back to trio's cache
