"""Abuse of resources and time: every case ends in a clear status, nothing left over."""

from __future__ import annotations

import functools
import os
import resource
import signal
import time
from typing import Any

import pytest
import trio

from tests.sandbox.conftest import give_to_sandbox

PY = ("/usr/bin/python3", "-I", "-S", "-c")


async def test_sleep_past_timeout(tool: Any) -> None:
    started = time.monotonic()
    result = await tool.run(argv=("/bin/sleep", "30"), timeout_s=0.5)
    assert result.status == "timeout"
    assert result.message == "killed after 0.5s timeout"
    assert time.monotonic() - started < 3


async def test_term_ignoring_tool_is_killed_after_grace(tool: Any) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    started = time.monotonic()
    result = await tool.py(code, timeout_s=0.5)
    assert result.status == "timeout"
    assert result.signal == signal.SIGKILL, result.stderr_tail
    assert time.monotonic() - started < 4


async def test_cpu_spin_hits_cpu_limit(tool: Any) -> None:
    result = await tool.py("while True: pass", cpu_time_s=1, timeout_s=10)
    assert result.status == "limit_exceeded", result
    assert "CPU" in result.message
    assert result.signal == signal.SIGXCPU
    assert result.wall_time_s < 5
    if tool.isolation == "process":  # namespaces measures CPU of python: tools only
        assert 0 < result.cpu_time_s < 3


@pytest.fixture
def abuse_package(shared_dir: str) -> str:
    root = os.path.join(shared_dir, "abuse_pkgs", "abuse")
    os.makedirs(root)
    os.chmod(os.path.dirname(root), 0o755)
    with open(os.path.join(root, "__init__.py"), "w") as handle:
        handle.write(
            "def spin():\n"
            "    while True:\n"
            "        pass\n"
            "def eat():\n"
            "    chunks = []\n"
            "    while True:\n"
            "        chunks.append(bytearray(16 * 2**20))\n"
        )
    return root


async def test_python_tool_cpu_spin_is_measured(tool: Any, abuse_package: str) -> None:
    result = await tool.run(python="abuse:spin", python_packages=(abuse_package,), cpu_time_s=1)
    assert result.status == "limit_exceeded", result
    assert "CPU" in result.message
    # Measured, and stopped by the limit (hard limit = 2 s of CPU). No lower bound: the
    # kernel enforces RLIMIT_CPU on tick-sampled time, which can read below the limit.
    assert 0 < result.cpu_time_s < 3


async def test_python_tool_memory_bomb(tool: Any, abuse_package: str) -> None:
    result = await tool.run(
        python="abuse:eat", python_packages=(abuse_package,), memory_bytes=200 * 2**20
    )
    assert result.status == "limit_exceeded", result
    assert "memory" in result.message
    assert 20 * 2**20 < result.peak_memory_bytes <= 200 * 2**20


async def test_memory_bomb_hits_memory_limit(tool: Any) -> None:
    code = "chunks = []\nwhile True: chunks.append(bytearray(16 * 2**20))"
    result = await tool.py(code, memory_bytes=256 * 2**20)
    assert result.status == "limit_exceeded", result
    assert "memory" in result.message


async def test_fork_bomb_hits_process_limit(tool: Any) -> None:
    code = "import os\nwhile True:\n    os.fork()"
    result = await tool.py(code, max_processes=32, timeout_s=10)
    assert result.status == "limit_exceeded", result
    assert "process limit" in result.message


async def test_file_size_limit(tool: Any) -> None:
    result = await tool.run(
        argv=("/bin/sh", "-c", "exec head -c 3000000 /dev/zero > big"), max_file_bytes=2**20
    )
    assert result.status == "limit_exceeded", result
    assert result.signal == signal.SIGXFSZ


async def test_huge_stdout_is_truncated_with_bounded_memory(tool: Any) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await tool.run(argv=("/usr/bin/head", "-c", str(100 * 2**20), "/dev/zero"))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.status == "ok", result
    assert result.truncated
    assert len(result.output["text"]) == 2**20
    assert "truncated" in result.message
    assert (after - before) * 1024 < 40 * 2**20


async def test_huge_stdin_to_a_tool_that_never_reads(tool: Any) -> None:
    blob = {"data": "x" * (50 * 2**20)}
    started = time.monotonic()
    done = await tool.run(blob, argv=("/bin/sleep", "0.2"))
    assert done.status == "ok"
    stuck = await tool.run(blob, argv=("/bin/sleep", "30"), timeout_s=1)
    assert stuck.status == "timeout"
    assert time.monotonic() - started < 6


GRANDCHILD = """
import json, os, signal, sys, time
args = json.load(sys.stdin)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(args["pidfile"] + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.rename(args["pidfile"] + ".tmp", args["pidfile"])
        time.sleep(120)
        os._exit(0)
    os._exit(0)
while not os.path.exists(args["pidfile"]):
    time.sleep(0.01)
time.sleep(args["sleep"])
print("{}")
"""


@pytest.fixture
def pid_dir(shared_dir: str) -> str:
    path = os.path.join(shared_dir, "pids")
    os.mkdir(path)
    give_to_sandbox(path)
    return path


def _all_gone(token_processes: Any, wait_until: Any) -> None:
    # Both backends give the tool its own pid namespace, so the pid file holds a pid of
    # that namespace; the token scan finds the grandchild on the host. When `run` has
    # returned (or re-raised Cancelled) the sandbox has been reaped, so nothing may be
    # left: the bounded wait only absorbs /proc's view lagging under load.
    assert wait_until(lambda: token_processes() == []), token_processes()


async def test_setsid_grandchild_dies_on_timeout(
    tool: Any, pid_dir: str, token_processes: Any, wait_until: Any
) -> None:
    pidfile = os.path.join(pid_dir, "gc")
    result = await tool.py(
        GRANDCHILD, {"pidfile": pidfile, "sleep": 60}, writable_paths=(pid_dir,), timeout_s=1.5
    )
    assert result.status == "timeout"
    assert os.path.exists(pidfile)
    _all_gone(token_processes, wait_until)


async def test_setsid_grandchild_dies_on_normal_return(
    tool: Any, pid_dir: str, token_processes: Any, wait_until: Any
) -> None:
    pidfile = os.path.join(pid_dir, "gc")
    result = await tool.py(GRANDCHILD, {"pidfile": pidfile, "sleep": 0}, writable_paths=(pid_dir,))
    assert result.status == "ok", result
    _all_gone(token_processes, wait_until)


async def test_setsid_grandchild_dies_on_cancellation(
    tool: Any, pid_dir: str, token_processes: Any, work_root: str, wait_until: Any
) -> None:
    pidfile = os.path.join(pid_dir, "gc")
    seen_alive: list[int] = []
    outcome: list[Any] = []

    async def call() -> None:
        outcome.append(
            await tool.py(GRANDCHILD, {"pidfile": pidfile, "sleep": 60}, writable_paths=(pid_dir,))
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            while not os.path.exists(pidfile):  # noqa: ASYNC110 (another process)
                await trio.sleep(0.01)
            seen_alive.extend(token_processes())
            nursery.cancel_scope.cancel()
    assert outcome == []  # run() did not return: trio.Cancelled went through it
    assert len(seen_alive) >= 2  # control: the tool and its grandchild were running
    _all_gone(token_processes, wait_until)
    assert [name for name in os.listdir(work_root) if name.startswith("call-")] == []


async def test_cancellation_of_many_concurrent_calls(tool: Any, token_processes: Any) -> None:
    started = trio.Event()
    with trio.move_on_after(1.0) as scope:
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(functools.partial(tool.run, argv=("/bin/sleep", "30")))
    assert scope.cancelled_caught
    assert token_processes() == []
    del started


async def test_concurrent_calls_all_succeed(tool: Any) -> None:
    results: list[Any] = []

    async def one(i: int) -> None:
        results.append(await tool.run({"i": i}, argv=("/bin/cat",)))

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(one, i)
    assert sorted(r.output["i"] for r in results) == list(range(12))
    assert {r.status for r in results} == {"ok"}
