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

import contextlib
import json
import os
import signal
from typing import Any

import attrs
import trio

from . import _bwrap, _cgroup, _seccomp
from ._call import Go, build_result, call_dir, encode_arguments, memfd, reachable_spec
from ._process import Child, Collected, drive, spawn, wait_or_kill
from ._result import Result
from ._spec import Spec
from ._workdir import runner_dir, sandbox_user

_ARGS_FD = 3
_STATUS_FD = 4
_REPORT_FD = 5  # python tools only: the runner's own peak RSS (see _runner._report)
_SECCOMP_FD = 6
_GATE_FD = 7  # with a memory cgroup: pid 1 waits here until it has been moved into it


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

    async def run(self, spec: Spec, arguments: Any, *, go: Go | None = None) -> Result:
        """Run one call; see `sandbox.run` for the contract (kill on cancel, no leftovers).

        `go` is awaited once bubblewrap is started: it builds the sandbox meanwhile, and
        its pid 1 waits at the gate, which only `drive` (after `go`) opens; the arguments
        are written after `go` too. If `go` raises, the sandbox is killed (`_abort`).
        """
        stdin_data = encode_arguments(arguments)
        async with call_dir(spec) as (work_root, work_dir), _cgroup.for_call(
            spec.memory_bytes
        ) as cgroup:
            spec = reachable_spec(spec, work_root)
            # Always gated, cgroup or not: a pid 1 orphaned by a cancel right at the start is
            # then found and killed by the pipe it holds (`_Gate.close`).
            gate = _Gate(cgroup)
            try:
                child = self.start(
                    spec, work_root=work_root, work_dir=work_dir, gate_fd=gate.read if gate else None
                )
                if go is not None:
                    try:
                        await go()
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await self._abort(child)
                        raise
                collected = await drive(
                    child,
                    stdin_data,
                    timeout_s=spec.timeout_s,
                    max_stdout=spec.max_output_bytes,
                    max_stderr=spec.max_stderr_bytes,
                    terminate=self._terminate,
                    on_extra=gate.on_status if gate else None,
                )
                if gate is not None:
                    # bwrap may exit a moment before its pid 1 is gone; the cgroup can be
                    # removed only after.
                    await gate.pid1_gone()
            finally:
                if gate is not None:
                    gate.close()
            memory = (cgroup.oom_kills() > 0, cgroup.peak_bytes()) if cgroup else (False, 0)
        return self._result(spec, child, collected, memory=memory, gate=gate)

    def start(
        self, spec: Spec, *, work_root: str, work_dir: str, gate_fd: int | None = None
    ) -> Child:
        """Spawn the launcher of one sandbox for `spec` in `work_dir`: the same for a
        one-shot call (`run`) and a long-lived session (`sandbox.open_session`), seccomp
        filter and all. The caller passes a spec through `reachable_spec` first.

        With `gate_fd` (the read end of a pipe), the sandbox's pid 1 waits, set up but
        before it loads seccomp and runs the tool, until a byte arrives there (bwrap's
        `--block-fd`): the time to put it in the call's memory cgroup.

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
        if gate_fd is not None:
            launcher += ["--block-fd", str(_GATE_FD)]
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
            if gate_fd is not None:
                fds[_GATE_FD] = gate_fd
            return spawn(launcher[0], launcher, {}, fds=fds)
        finally:
            for fd in owned:
                os.close(fd)

    async def _abort(self, child: Child) -> None:
        """Kill and reap a sandbox whose tool was never let go (its pid 1 still at the
        gate), and close our ends of its pipes. The gate's `close` is the backstop for a
        pid 1 bwrap had not reported yet."""
        collected = Collected()
        status = bytearray()
        fd = child.extra[_STATUS_FD]
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 4096):
                status += chunk
        collected.extra = {_STATUS_FD: status}
        try:
            await self._terminate(child, collected)
        finally:
            for end in (child.stdin, child.stdout, child.stderr, *child.extra.values()):
                with contextlib.suppress(OSError):
                    os.close(end)
            if child.pidfd >= 0:
                os.close(child.pidfd)
                child.pidfd = -1

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

    def _result(
        self,
        spec: Spec,
        child: Child,
        collected: Collected,
        *,
        memory: tuple[bool, int] = (False, 0),
        gate: _Gate | None = None,
    ) -> Result:
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
        notes = (f"no memory cgroup ({gate.problem})",) if gate and gate.problem else ()
        return build_result(
            spec,
            backend=self.name,
            collected=collected,
            exit_code=exit_code,
            signal=sig,
            cpu_time_s=cpu,
            peak_memory_bytes=max(peak, memory[1]),
            setup_error=setup_error,
            notes=notes,
            memory_killed=memory[0],
        )


class _Gate:
    """Holds the sandbox's pid 1 at bwrap's `--block-fd` until it is in the call's cgroup
    (where there is one; without, until bwrap has reported it).

    bwrap reports pid 1's host pid on its status pipe right after creating it; pid 1 sets
    up the sandbox, then blocks reading the gate before it loads seccomp and forks the
    tool, so everything the tool runs inherits the cgroup. If the move fails the call
    still runs (bounded by RLIMIT_AS and the sized tmpfs), and its message says so.
    """

    def __init__(self, cgroup: _cgroup.CallCgroup | None) -> None:
        self.cgroup = cgroup
        self.read, self.write = os.pipe()
        self.problem: str | None = None
        self._status = bytearray()
        self._pid1_fd = -1  # pidfd of the sandbox's pid 1, opened while it is bwrap's child

    async def on_status(self, target: int, chunk: bytes) -> None:
        if target != _STATUS_FD or self.write < 0:
            return
        self._status += chunk
        pid1 = next(
            (item["child-pid"] for item in _status_lines(bytes(self._status)) if "child-pid" in item),
            None,
        )
        if pid1 is None:
            return
        try:
            # bwrap has not been reaped (it is still reading its pid 1), so the pid is that process.
            self._pid1_fd = os.pidfd_open(int(pid1))
        except OSError:
            pass
        if self.cgroup is not None:
            try:
                # In a thread: the kernel's cgroup migration may wait for an RCU grace
                # period (~0.3 ms), which would hold up every other connection's events.
                await trio.to_thread.run_sync(self.cgroup.add, int(pid1))
            except OSError as exc:
                self.problem = f"cannot move the sandbox into {self.cgroup.path}: {exc.strerror}"
        try:
            os.write(self.write, b"1")
        except OSError:
            pass  # pid 1 is gone already
        self._close_pipe()

    async def pid1_gone(self) -> None:
        """Wait (bounded) until the sandbox's pid 1 has exited; call after bwrap is reaped."""
        if self._pid1_fd >= 0:
            with trio.move_on_after(2.0):
                await trio.lowlevel.wait_readable(self._pid1_fd)

    def close(self) -> None:
        """Close the pipe's ends and the pidfd; call after the launcher is reaped.

        An unreleased pid 1 would read EOF and go on outside the cgroup. One can outlive a
        call cancelled before bwrap reported it (bwrap killed in that window, its pid 1
        orphaned, unseen): so first every other process still holding the gate is killed.
        """
        if self.write >= 0:
            self._kill_holders()
        self._close_pipe()
        if self._pid1_fd >= 0:
            os.close(self._pid1_fd)
            self._pid1_fd = -1

    def _kill_holders(self) -> None:
        """SIGKILL every other process holding the gate's pipe (only our sandbox's pid 1 can:
        the pipe is private to this call, and bwrap gave it to pid 1 alone)."""
        try:
            wanted = f"pipe:[{os.fstat(self.write).st_ino}]"
        except OSError:
            return
        me = str(os.getpid())
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        os.kill(int(pid), signal.SIGKILL)
                        break
                except OSError:
                    continue

    def _close_pipe(self) -> None:
        for fd in (self.read, self.write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.read = self.write = -1


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
