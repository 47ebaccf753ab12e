"""Resource limits: from a Spec to rlimits, and from a finished tool back to a status.

The same limits are applied by both backends, always inside the sandbox and never on
the launcher (RLIMIT_NPROC counts per uid: set on bubblewrap itself, concurrent
sandboxes would starve each other's clone(CLONE_NEWUSER); see SANDBOX-NOTES trap 6).
`classify()` decides whether a failed tool ran into one of them; it is a best-effort
reading of signals and the stderr tail, documented per case below.
"""

from __future__ import annotations

import math
import re
import signal as _signal

from ._spec import Spec

# Lines a runtime prints when an allocation or a fork failed under our limits.
_MEMORY_PATTERNS = re.compile(
    r"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory", re.IGNORECASE
)
_PROCESS_PATTERNS = re.compile(r"Resource temporarily unavailable|fork: retry")
_FILE_PATTERNS = re.compile(r"File too large")
EXEC_MARKERS = ("sconnect-sandbox: cannot execute ", "prlimit: failed to execute ")


def rlimits(spec: Spec) -> dict[str, int]:
    """The rlimits of a Spec, keyed by the runner's names (soft = hard, CPU hard + 1 s)."""
    return {
        "as": spec.memory_bytes,
        "cpu": max(1, math.ceil(spec.cpu_time_s)),
        "fsize": spec.max_file_bytes,
        "nofile": spec.max_open_files,
        "nproc": spec.max_processes,
        "core": 0,
    }


def tmpfs_sizes(spec: Spec) -> dict[str, int]:
    """Bytes of each RAM-backed scratch mount of a call, from its memory budget.

    tmpfs pages are not charged to RLIMIT_AS, so they are sized here: the work dir and
    /tmp a quarter of the budget each, /dev/shm a sixteenth (at least 1 MiB each). A
    call's RAM is therefore bounded by ~1.56 x `memory_bytes` (RLIMIT_AS + scratch);
    where a memory cgroup is in force it bounds both together.
    """
    floor = 2**20
    return {
        "work": max(floor, spec.memory_bytes // 4),
        "tmp": max(floor, spec.memory_bytes // 4),
        "shm": max(floor, spec.memory_bytes // 16),
    }


def prlimit_args(spec: Spec) -> list[str]:
    """util-linux `prlimit` options setting `rlimits(spec)` before it execs the tool."""
    limits = rlimits(spec)
    return [
        f"--as={limits['as']}",
        f"--cpu={limits['cpu']}:{limits['cpu'] + 1}",
        f"--fsize={limits['fsize']}",
        f"--nofile={limits['nofile']}",
        f"--nproc={limits['nproc']}",
        "--core=0",
        "--",
    ]


def classify(
    spec: Spec, *, exit_code: int | None, signal: int | None, cpu_time_s: float, stderr: str
) -> tuple[str, str] | None:
    """(status, message) when a finished tool hit a limit, else None.

    - SIGXCPU, or SIGKILL with the CPU limit used up: the CPU limit (the kernel sends
      SIGXCPU at the soft limit and SIGKILL at the hard one).
    - SIGXFSZ, or "File too large" in stderr of a failed tool: the file size limit.
    - ENOSPC ("No space left on device") in stderr of a failed tool: a sized tmpfs
      (scratch, /tmp, /dev/shm) is full.
    - MemoryError / ENOMEM / bad_alloc in stderr of a failed tool, or SIGKILL/SIGSEGV
      with no other explanation while near the memory limit is not guessed at: only
      what the tool reported counts.
    - EAGAIN from fork in stderr of a failed tool: the process limit.
    """
    cpu_limit = rlimits(spec)["cpu"]
    if signal == _signal.SIGXCPU or (
        signal == _signal.SIGKILL and cpu_time_s >= cpu_limit - 0.05
    ):
        return "limit_exceeded", f"CPU time limit of {spec.cpu_time_s:g}s exceeded"
    if signal == _signal.SIGXFSZ:
        return "limit_exceeded", f"file size limit of {spec.max_file_bytes} bytes exceeded"
    if exit_code == 0 and signal is None:
        return None
    tail = stderr[-2000:]
    if _MEMORY_PATTERNS.search(tail):
        return "limit_exceeded", f"memory limit of {spec.memory_bytes} bytes exceeded"
    if "No space left on device" in tail:
        return "limit_exceeded", "no space left: a scratch mount (sized from the memory budget) is full"
    if _FILE_PATTERNS.search(tail):
        return "limit_exceeded", f"file size limit of {spec.max_file_bytes} bytes exceeded"
    if _PROCESS_PATTERNS.search(tail):
        return "limit_exceeded", f"process limit of {spec.max_processes} reached"
    return None


def missing_binary(exit_code: int | None, stderr: str) -> str | None:
    """The program named in an exec-failure line of the launcher, when exec failed."""
    if exit_code != 127:
        return None
    for line in stderr.splitlines():
        for marker in EXEC_MARKERS:
            if line.startswith(marker):
                return line[len(marker) :]
    return None
