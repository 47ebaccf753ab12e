"""`NamespacesBackend`: one fresh bubblewrap sandbox per call.

Launch: when the engine runs as root, `setpriv` drops to `SANDBOX_UID` before exec'ing
bwrap (bwrap run by real root maps the sandbox onto host uid 0 — trap 1); bwrap itself
gets an empty environment (its pid 1 would leak it — trap 2) and reads its options from
a memfd (`--args 3`); `--json-status-fd 4` reports the host pid of the sandbox's pid 1;
the seccomp program (`_seccomp`) is another memfd (`--seccomp 6`).
The launcher is spawned from the Trio thread, so `--die-with-parent` follows the
engine's lifetime, not a worker thread's (trap 5).

Kill (timeout or cancellation): SIGTERM to the tool's process group, up to `grace_s`
for it to go, then SIGKILL to the sandbox's pid 1 — which takes the whole pid
namespace down, setsid'd grandchildren included (trap 4) — and to bwrap; bwrap is reaped
before `run` returns, after the kernel has reaped everything in the namespace.

Exit status: bwrap reports a tool killed by signal N as exit code 128 + N; such codes
are read back as that signal (a tool that itself exits 129..159 is indistinguishable).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import attrs
import trio

from . import _bwrap, _seccomp
from ._call import build_result, call_dir, encode_arguments, memfd, reachable_spec
from ._process import Child, Collected, drive, spawn, wait_or_kill
from ._result import Result
from ._spec import Spec
from ._workdir import runner_dir, sandbox_user

_ARGS_FD = 3
_STATUS_FD = 4
_REPORT_FD = 5  # python tools only: the runner's own peak RSS (see _runner._report)
_SECCOMP_FD = 6


def _status_lines(data: bytes) -> list[dict[str, Any]]:
    lines = []
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            lines.append(item)
    return lines


@attrs.frozen
class NamespacesBackend:
    """bubblewrap per call. Build with `backend_for()`; fields are resolved host paths."""

    bwrap: str
    setpriv: str | None  # required when the engine runs as root
    python: str = "/usr/bin/python3"
    grace_s: float = 0.5
    name: str = "namespaces"
    # load the seccomp filter; False only when the operator opted out of it explicitly
    seccomp: bool = True
    # bwrap >= 0.8: no user namespace can be created inside (the filter denies it too)
    disable_userns: bool = True

    async def run(self, spec: Spec, arguments: Any) -> Result:
        """Run one call; see `sandbox.run` for the contract (kill on cancel, no leftovers)."""
        stdin_data = encode_arguments(arguments)
        async with call_dir(spec) as (work_root, work_dir):
            spec = reachable_spec(spec, work_root)
            child = self.start(spec, work_root=work_root, work_dir=work_dir)
            collected = await drive(
                child,
                stdin_data,
                timeout_s=spec.timeout_s,
                max_stdout=spec.max_output_bytes,
                max_stderr=spec.max_stderr_bytes,
                terminate=self._terminate,
            )
        return self._result(spec, child, collected)

    def start(self, spec: Spec, *, work_root: str, work_dir: str) -> Child:
        """Spawn the launcher of one sandbox for `spec` in `work_dir`: the same for a
        one-shot call (`run`) and a long-lived session (`sandbox.open_session`), seccomp
        filter and all. The caller passes a spec through `reachable_spec` first.

        Raises SpawnError when it cannot start; the caller owns and reaps the Child.
        """
        needs_runner = spec.python is not None or spec.proxy_socket is not None
        runner = runner_dir(work_root) if needs_runner else None
        seccomp_fd = _SECCOMP_FD if self.seccomp else None
        options = _bwrap.options(
            spec,
            work_dir=work_dir,
            runner_dir=runner,
            seccomp_fd=seccomp_fd,
            disable_userns=self.disable_userns,
        )
        launcher = [self.bwrap, "--args", str(_ARGS_FD), "--json-status-fd", str(_STATUS_FD)]
        python_tool = spec.python is not None
        report_fd = _REPORT_FD if python_tool else None
        launcher += _bwrap.command(spec, python=self.python, report_fd=report_fd)
        user = sandbox_user()
        if user is not None:
            if self.setpriv is None:
                raise AssertionError("backend_for() never builds this without setpriv")
            launcher = [
                self.setpriv,
                f"--reuid={user[0]}",
                f"--regid={user[1]}",
                "--clear-groups",
                "--",
                *launcher,
            ]
        args_fd = memfd(b"".join(arg.encode() + b"\0" for arg in options), "bwrap-args")
        owned = [args_fd]
        try:
            fds = {_ARGS_FD: args_fd, _STATUS_FD: -1}
            if python_tool:
                fds[_REPORT_FD] = -1
            if seccomp_fd is not None:
                fds[seccomp_fd] = memfd(_seccomp.compiled(), "seccomp-bpf")
                owned.append(fds[seccomp_fd])
            return spawn(launcher[0], launcher, {}, fds=fds)
        finally:
            for fd in owned:
                os.close(fd)

    async def _terminate(self, child: Child, collected: Collected) -> None:
        status = _status_lines(bytes(collected.extra.get(_STATUS_FD, b"")))
        pid1 = next((item["child-pid"] for item in status if "child-pid" in item), None)
        if pid1 is None and not child.reaped:
            # Stopped before bwrap reported its sandbox's pid 1 (a cancel right after the
            # start). Killing bwrap alone would orphan a pid 1 it is still creating: its
            # parent-death signal does not survive entering the user namespace. Freeze
            # bwrap first, so that no child appears behind our back, then kill what it made.
            await _freeze(child.pid)
            for orphan in _children(child.pid):
                try:
                    os.kill(orphan, signal.SIGKILL)  # pid 1 of its pid namespace: all of it goes
                except OSError:
                    pass
            await wait_or_kill(child, 0.0)
            return
        if pid1 is not None and not child.reaped:
            # bwrap is our unreaped child, so its child (pid 1) cannot have been reused.
            tools: list[int] = []
            try:
                with open(f"/proc/{pid1}/task/{pid1}/children") as handle:  # noqa: ASYNC230 (procfs, no disk)
                    tools = [int(pid) for pid in handle.read().split()]
            except OSError:
                pass
            for pid in tools:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGTERM)
                    except OSError:
                        pass
            if tools:
                with trio.move_on_after(self.grace_s):
                    await child.wait()
            if not child.reaped:
                try:
                    os.kill(pid1, signal.SIGKILL)
                except OSError:
                    pass
        # bwrap exits once pid 1 is gone; if it does not, SIGKILL it too (--die-with-parent
        # then kills pid 1 with it).
        await wait_or_kill(child, 2.0)

    def _result(self, spec: Spec, child: Child, collected: Collected) -> Result:
        status = _status_lines(bytes(collected.extra.get(_STATUS_FD, b"")))
        started = any("child-pid" in item for item in status)
        reported = next((item["exit-code"] for item in status if "exit-code" in item), None)
        raw = child.status or 0
        exit_code: int | None
        sig: int | None = None
        if reported is not None:
            exit_code = int(reported)
        elif os.WIFEXITED(raw):
            exit_code = os.WEXITSTATUS(raw)
        else:
            exit_code, sig = None, os.WTERMSIG(raw)
        if exit_code is not None and 128 < exit_code < 128 + 65:
            sig, exit_code = exit_code - 128, None
        setup_error = None
        if not started and not collected.timed_out:
            stderr = bytes(collected.stderr).decode("utf-8", "replace").strip()
            setup_error = stderr.splitlines()[-1] if stderr else f"launcher status {raw}"
        # bwrap was vfork'ed from the engine, so its rusage carries the engine's peak RSS,
        # and its monitor never reaps pid 1, so the tool's CPU time is not in it either:
        # only the Python runner's own report measures the tool (0 = not measured).
        peak, cpu = 0, 0.0
        report = _status_lines(bytes(collected.extra.get(_REPORT_FD, b"")))
        if report:
            peak = int(report[-1].get("peak_memory_bytes", 0))
            cpu = float(report[-1].get("cpu_time_s", 0.0))
        return build_result(
            spec,
            backend=self.name,
            collected=collected,
            exit_code=exit_code,
            signal=sig,
            cpu_time_s=cpu,
            peak_memory_bytes=peak,
            setup_error=setup_error,
        )


async def _freeze(pid: int) -> None:
    """SIGSTOP our unreaped child ``pid`` and wait (bounded) until it is stopped or gone."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError:
        return
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as handle:  # noqa: ASYNC230 (procfs, no disk)
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("T", "t", "Z", "X"):
            return
        await trio.sleep(0.005)


def _children(pid: int) -> list[int]:
    """The children of our unreaped child ``pid`` (neither pid can have been reused)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:  # noqa: ASYNC230 (procfs, no disk)
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []
