"""`ProcessBackend`: a supervised child process, for hosts without usable bubblewrap.

The launcher is the runner (`python3 -I -S _runner.py --config-fd=3`, empty
environment), which stays outside the tool's restrictions as its supervisor: it becomes
a child subreaper, puts the tool in a new pid namespace (as root; as root without
CAP_SYS_ADMIN, or as another user, inside a user namespace mapping only the uids in use)
with a private mount namespace holding a fresh /proc — the tool sees its own processes
only, never another process's command line — sized tmpfs mounts on the work dir and
/dev/shm, and `writable_paths` re-bound nosuid,nodev; forks the tool into its own session, and in
the tool's process sets the rlimits, creates a new network namespace when the tool has
no network, drops to `SANDBOX_UID` when the engine is root, sets no_new_privs, applies
Landlock (reads limited to the system dirs, /etc, /dev, /proc, the runner, the declared
paths; writes to the work dir, `writable_paths` and /dev/null; no device ioctls; TCP
denied without network; no signals to processes outside the tool's domain), clears its
capabilities and loads the seccomp filter, then execs `argv` or calls the Python
function. When the tool ends, or on SIGTERM, the supervisor kills every descendant left
(double-forked, setsid'd ones were re-parented to it).

Where no pid namespace can be made (not root, no user namespaces), the call fails with a
setup error ("cannot hide the host's processes") unless the operator opted out
(`require_private_proc=False`, from ``SCONNECT_SANDBOX_ALLOW_WEAK=1``).

Weaker than namespaces, and said so in `Result.message`:
- without a network namespace and without Landlock ABI >= 4 the network is not
  restricted; with Landlock but no network namespace only TCP is (UDP is not covered);
- without Landlock the filesystem is confined by file permissions alone;
- RLIMIT_NPROC counts every process of the tool's uid, shared by concurrent calls;
- the system directories are the host's (readable), there is no private /tmp: tools
  should write under their work dir or /dev/shm (Python's `tempfile` falls back to the
  cwd).
"""

from __future__ import annotations

import functools
import hashlib
import json
import marshal
import os
import shutil
import signal
import tempfile
from typing import Any

import attrs
import trio

from . import _cgroup, _seccomp
from ._bwrap import check_cwd
from ._call import Go, build_result, call_dir, encode_arguments, memfd, reachable_spec
from ._errors import SpecError
from ._landlock import abi_version
from ._limits import rlimits, tmpfs_sizes
from ._process import Child, Collected, drive, spawn, wait_or_kill
from ._result import Result
from ._spec import Spec
from ._workdir import runner_dir, sandbox_user

_CONFIG_FD = 3
_STATUS_FD = 4
_SYSTEM_READ = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc",
)


@functools.cache
def _package_farm(work_root: str, packages: tuple[str, ...]) -> str:
    """A directory of symlinks name -> package, put on sys.path instead of the parents."""
    names: dict[str, str] = {}
    for host in packages:
        name = os.path.basename(os.path.normpath(host))
        if name in names:
            raise SpecError(f"python_packages: two entries are named {name!r}")
        names[name] = os.path.normpath(host)
    digest = hashlib.sha256("\0".join(packages).encode()).hexdigest()[:16]
    target = os.path.join(work_root, f".pkgs-{digest}")
    if os.path.isdir(target) and not os.path.islink(target):
        return target
    staging = tempfile.mkdtemp(dir=work_root, prefix=".pkgs-tmp-")
    for name, host in names.items():
        os.symlink(host, os.path.join(staging, name))
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@attrs.frozen
class ProcessBackend:
    """Supervised subprocess with rlimits, uid drop, no_new_privs and Landlock."""

    python: str = "/usr/bin/python3"
    landlock_abi: int | None = attrs.field(factory=abi_version)
    grace_s: float = 0.5
    name: str = "process"
    # load the seccomp filter; False only when the operator opted out of it explicitly
    seccomp: bool = True
    # refuse to run a tool that could see the host's processes (no pid namespace)
    require_private_proc: bool = True

    async def run(self, spec: Spec, arguments: Any, *, go: Go | None = None) -> Result:
        """Run one call; see `sandbox.run` for the contract (kill on cancel, no leftovers).

        `go` is awaited before the supervisor is spawned (its work dir and cgroup made):
        the supervisor starts the tool as soon as it runs, so nothing can start earlier.
        """
        stdin_data = encode_arguments(arguments)
        async with call_dir(spec) as (work_root, work_dir), _cgroup.for_call(
            spec.memory_bytes
        ) as cgroup:
            spec = reachable_spec(spec, work_root)
            if go is not None:
                await go()
            child = self.start(
                spec,
                work_root=work_root,
                work_dir=work_dir,
                cgroup_procs=cgroup.procs_file if cgroup else None,
            )
            collected = await drive(
                child,
                stdin_data,
                timeout_s=spec.timeout_s,
                max_stdout=spec.max_output_bytes,
                max_stderr=spec.max_stderr_bytes,
                terminate=self._terminate,
            )
            memory = (cgroup.oom_kills() > 0, cgroup.peak_bytes()) if cgroup else (False, 0)
        return self._result(spec, child, collected, memory=memory)

    def start(
        self, spec: Spec, *, work_root: str, work_dir: str, cgroup_procs: str | None = None
    ) -> Child:
        """Spawn the supervising runner for `spec` in `work_dir`: the same for a one-shot
        call (`run`) and a long-lived session (`sandbox.open_session`), seccomp filter,
        Landlock and private /proc included. The caller passes a spec through
        `reachable_spec` first.

        With `cgroup_procs`, the supervisor moves itself into that memory cgroup before
        it forks the tool.

        Raises SpawnError when it cannot start; the caller owns and reaps the Child.
        """
        user = sandbox_user()
        runner = runner_dir(work_root)
        read = [*_SYSTEM_READ, runner, *spec.readable_paths, *spec.python_packages]
        sys_path: list[str] = []
        if spec.python_packages:
            farm = _package_farm(work_root, spec.python_packages)
            read.append(farm)
            sys_path.append(farm)
        config = {
            "supervise": True,
            "status_fd": _STATUS_FD,
            "mode": "call" if spec.python is not None else "exec",
            "argv": list(spec.argv),
            "target": spec.python,
            "sys_path": sys_path,
            "env": dict(spec.env),
            "limits": rlimits(spec),
            "drop_to": list(user) if user is not None else None,
            "unshare_net": not spec.network,
            "private_proc": "require" if self.require_private_proc else "try",
            "work_tmpfs": {
                "path": work_dir,
                "size": tmpfs_sizes(spec)["work"],
                "uid": user[0] if user is not None else os.geteuid(),
                "gid": user[1] if user is not None else os.getegid(),
            },
            "seccomp": _seccomp.compiled() if self.seccomp else None,
            "nosuid_paths": list(spec.writable_paths),
            "shm_bytes": tmpfs_sizes(spec)["shm"],
            "landlock": None
            if self.landlock_abi is None
            else {
                "read": read,
                "write": [work_dir, *spec.writable_paths],
                "block_tcp": not spec.network,
            },
            "cwd": check_cwd(spec, work_dir),
            "grace_s": self.grace_s,
            "cgroup_procs": cgroup_procs,
        }
        launcher = [self.python, "-I", "-S", f"{runner}/_runner.py", f"--config-fd={_CONFIG_FD}"]
        config_fd = memfd(marshal.dumps(config), "runner-config")
        try:
            return spawn(launcher[0], launcher, {}, fds={_CONFIG_FD: config_fd, _STATUS_FD: -1})
        finally:
            os.close(config_fd)

    async def _terminate(self, child: Child, collected: Collected) -> None:
        # The supervisor forwards SIGTERM to the tool's tree, waits grace_s, SIGKILLs
        # what is left and exits. SIGKILL of its group is the backstop if it does not.
        child.signal(signal.SIGTERM)
        with trio.move_on_after(self.grace_s + 2.0):
            await child.wait()
        if not child.reaped:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
        await wait_or_kill(child, 0.0)

    def _result(
        self, spec: Spec, child: Child, collected: Collected, *, memory: tuple[bool, int] = (False, 0)
    ) -> Result:
        report: dict[str, Any] = {}
        for line in bytes(collected.extra.get(_STATUS_FD, b"")).splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                report.update(item)
        setup_error = None
        if "exit_code" not in report and not collected.timed_out:
            stderr = bytes(collected.stderr).decode("utf-8", "replace").strip()
            setup_error = stderr.splitlines()[-1] if stderr else f"supervisor status {child.status}"
        exit_code = report.get("exit_code")
        if exit_code == 126 and "sconnect-sandbox: setup failed" in bytes(collected.stderr).decode(
            "utf-8", "replace"
        ):
            setup_error = bytes(collected.stderr).decode("utf-8", "replace").strip().splitlines()[-1]
        notes = []
        if not spec.network and not report.get("netns"):
            if self.landlock_abi is not None and self.landlock_abi >= 4:
                notes.append("process backend: only TCP is blocked (no network namespace)")
            else:
                notes.append("process backend: network NOT isolated")
        if self.landlock_abi is None:
            notes.append("process backend: no Landlock, filesystem confined by permissions only")
        if "exit_code" in report and not report.get("private_proc"):
            notes.append("process backend: host processes visible (no pid namespace)")
        if not self.seccomp:
            notes.append("no seccomp filter")
        if report.get("cgroup") is False:
            notes.append("no memory cgroup (the supervisor could not enter it)")
        usage = child.rusage
        return build_result(
            spec,
            backend=self.name,
            collected=collected,
            exit_code=exit_code,
            signal=report.get("signal"),
            cpu_time_s=float(report.get("cpu_time_s", 0.0))
            or ((usage.ru_utime + usage.ru_stime) if usage else 0.0),
            peak_memory_bytes=max(int(report.get("peak_memory_bytes", 0)), memory[1]),
            setup_error=setup_error,
            notes=tuple(notes),
            memory_killed=memory[0],
        )
