"""What every backend does around one launch: work dir, config memfd, Result assembly.

`call_dir()` yields a fresh per-call work dir and removes it afterwards — on success,
error, timeout and cancellation alike (removal runs in a worker thread, shielded and
bounded, so a cancelled caller still leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal as _signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import trio

from ._limits import classify, missing_binary
from ._process import Collected
from ._result import Result, decode_text, parse_output
from ._spec import Spec
from ._workdir import (
    default_work_root,
    make_call_dir,
    prepare_work_root,
    reachable_package,
    remove_call_dir,
)

# `sandbox.run`'s `go`: awaited once before the tool gets its input (the caller's "the
# decision is on disk"); see `_run` for the contract every backend keeps.
Go = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def call_dir(spec: Spec) -> AsyncIterator[tuple[str, str]]:
    """(work_root, fresh call dir); the call dir is removed on the way out."""
    root = prepare_work_root(spec.work_root or default_work_root())
    path = make_call_dir(root)
    try:
        yield root, path
    finally:
        with trio.move_on_after(30, shield=True):
            await trio.to_thread.run_sync(remove_call_dir, path)


def reachable_spec(spec: Spec, work_root: str) -> Spec:
    """`spec` with every Python package the sandbox user cannot reach replaced by a copy."""
    packages = tuple(reachable_package(path, work_root) for path in spec.python_packages)
    if packages == spec.python_packages:
        return spec
    return attrs.evolve(spec, python_packages=packages)


def memfd(data: bytes, name: str) -> int:
    """A sealed-by-convention in-memory file holding `data`, positioned at 0."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def encode_arguments(arguments: Any) -> bytes:
    return json.dumps(arguments).encode()


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def build_result(
    spec: Spec,
    *,
    backend: str,
    collected: Collected,
    exit_code: int | None,
    signal: int | None,
    cpu_time_s: float,
    peak_memory_bytes: int,
    setup_error: str | None = None,
    notes: tuple[str, ...] = (),
    memory_killed: bool = False,
) -> Result:
    """Turn what a launch produced into a Result (status and human message included).

    `memory_killed`: the kernel OOM-killed a process of the call's memory cgroup.
    """
    stderr = decode_text(bytes(collected.stderr))
    status: str
    if collected.timed_out:
        status, message = "timeout", f"killed after {spec.timeout_s:g}s timeout"
    elif memory_killed:
        status = "limit_exceeded"
        message = f"killed: memory limit of {spec.memory_bytes} bytes (memory cgroup)"
    elif setup_error is not None:
        status, message = "error", f"sandbox setup failed: {setup_error}"
    elif (limit := classify(
        spec, exit_code=exit_code, signal=signal, cpu_time_s=cpu_time_s, stderr=stderr
    )) is not None:
        status, message = limit
    elif (failed := missing_binary(exit_code, stderr)) is not None:
        program, _, reason = failed.rpartition(": ")
        status = "error"
        if "No such file" in reason:
            message = f"binary not found: {program}"
        else:
            message = f"cannot execute {program}: {reason}"
    elif signal is not None:
        status, message = "error", f"killed by {_signal_name(signal)}"
    elif exit_code != 0:
        last = stderr.strip().splitlines()[-1:] or [""]
        status = "error"
        message = f"exited with code {exit_code}" + (f": {last[0][:200]}" if last[0] else "")
    else:
        status, message = "ok", "ok"
    if collected.truncated:
        message += f" (stdout truncated at {spec.max_output_bytes} bytes)"
    for note in notes:
        message += f"; {note}"
    return Result(
        status=status,  # type: ignore[arg-type]
        output=parse_output(bytes(collected.stdout), truncated=collected.truncated),
        stderr_tail=stderr,
        exit_code=exit_code,
        signal=signal,
        wall_time_s=round(collected.ended - collected.started, 6),
        cpu_time_s=round(cpu_time_s, 6),
        peak_memory_bytes=peak_memory_bytes,
        truncated=collected.truncated,
        backend=backend,
        message=message,
    )
