"""`detect()`: which isolation this host offers, probed once and cached.

The probe starts a real minimal bubblewrap sandbox exactly the way the namespaces
backend does (as `SANDBOX_UID` through setpriv when root, empty environment), so "user
namespaces work" means "our sandbox starts", not merely "a sysctl says yes". It blocks
for a few milliseconds (at most 10 s): call it at startup (`sconnect check`, server
start), not per request; `backend_for()` uses the cached value.

It also builds the seccomp filter (`_seccomp`) and reads ``SCONNECT_SANDBOX_ALLOW_WEAK``:
without that explicit opt-out (``1``), a host where the filter cannot be built, or where
the process backend cannot hide the host's processes, refuses to run tools instead of
running them weaker.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import attrs

from . import _cgroup, _seccomp
from ._landlock import abi_version
from ._workdir import SANDBOX_UID, sandbox_user

ALLOW_WEAK_ENV = "SCONNECT_SANDBOX_ALLOW_WEAK"


@attrs.frozen
class Capabilities:
    """What this host can do. A plain value: tests build their own to simulate hosts."""

    bwrap: str | None  # absolute path of bubblewrap, None when not installed
    user_namespaces: bool  # a bwrap sandbox actually started in the probe
    landlock_abi: int | None  # None without Landlock
    default_backend: str  # "namespaces" when usable, else "process"
    summary: str  # one human line for `sconnect check` and the startup log
    setpriv: str | None = "/usr/bin/setpriv"  # needed to start bwrap as SANDBOX_UID as root
    prlimit: str | None = "/usr/bin/prlimit"  # sets the rlimits inside the sandbox
    python: str = "/usr/bin/python3"  # interpreter of python: tools, reachable by SANDBOX_UID
    running_as_root: bool = attrs.field(factory=lambda: os.geteuid() == 0)
    # why the seccomp filter cannot be built here; None = it is loaded into every tool
    seccomp_problem: str | None = None
    # bwrap honours --disable-userns and --size (bubblewrap >= 0.8); required by the backend
    disable_userns: bool = True
    # the operator set SCONNECT_SANDBOX_ALLOW_WEAK=1: run without what is missing
    allow_weak: bool = False
    # one line on the memory bound: a cgroup per call (v2 or v1), or rlimit + sized tmpfs
    memory_cgroup: str = ""

    def weak_problem(self) -> str | None:
        """Why tools would run weaker than documented here, or None."""
        if self.seccomp_problem is not None:
            return f"no seccomp filter ({self.seccomp_problem})"
        return None

    def namespaces_problem(self) -> str | None:
        """Why the namespaces backend cannot run here, or None when it can."""
        if self.bwrap is None:
            return "bubblewrap (bwrap) is not installed"
        if self.running_as_root and self.setpriv is None:
            return "running as root needs setpriv (util-linux) to start bwrap unprivileged"
        if self.prlimit is None:
            return "prlimit (util-linux) is not installed"
        if not self.user_namespaces:
            return f"{self.bwrap} cannot create user namespaces on this host"
        if not self.disable_userns:
            return (
                f"{self.bwrap} is older than bubblewrap 0.8 (no --size, --disable-userns): "
                "it cannot bound a tool's scratch space"
            )
        return None

    def pool_problem(self) -> str | None:
        """Why the pool backend cannot run here, or None when it can.

        Calls of one pool share a sandbox, so what keeps them apart must all be there:
        bubblewrap as for namespaces, the seccomp filter, and Landlock ABI >= 6 (its
        signal and abstract-socket scoping keeps a call from signalling a sibling).
        """
        problem = self.namespaces_problem()
        if problem is not None:
            return problem
        if self.seccomp_problem is not None:
            return f"no seccomp filter ({self.seccomp_problem})"
        if self.landlock_abi is None or self.landlock_abi < 6:
            found = "no Landlock" if self.landlock_abi is None else f"Landlock ABI {self.landlock_abi}"
            return f"{found}; the pool needs ABI >= 6 (Linux 6.12) to keep calls apart"
        return None


def _probe(bwrap: str, setpriv: str | None, *, disable_userns: bool) -> bool:
    argv = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    if disable_userns:
        argv += ["--disable-userns", "--size", str(2**20), "--tmpfs", "/tmp"]
    argv += ["--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    argv += ["--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "/usr/bin/true"]
    user = sandbox_user()
    if user is not None:
        if setpriv is None:
            return False
        argv = [setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--", *argv]
    try:
        done = subprocess.run(argv, env={}, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _which(name: str) -> str | None:
    found = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin")
    return os.path.realpath(found) if found else None


@functools.cache
def detect() -> Capabilities:
    """Probe the host once (cached for the life of the process)."""
    bwrap = _which("bwrap")
    setpriv = _which("setpriv")
    prlimit = _which("prlimit")
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    disable_userns = bwrap is not None and _probe(bwrap, setpriv, disable_userns=True)
    userns = disable_userns or (
        bwrap is not None and _probe(bwrap, setpriv, disable_userns=False)
    )
    landlock = abi_version()
    draft = Capabilities(
        bwrap=bwrap,
        user_namespaces=userns,
        landlock_abi=landlock,
        default_backend="process",
        summary="",
        setpriv=setpriv,
        prlimit=prlimit,
        python=python,
        seccomp_problem=_seccomp.problem(),
        disable_userns=disable_userns,
        allow_weak=os.environ.get(ALLOW_WEAK_ENV, "") == "1",
        memory_cgroup=_cgroup.probe().describe(),
    )
    problem = draft.namespaces_problem()
    default = "namespaces" if problem is None else "process"
    landlock_text = f"Landlock ABI {landlock}" if landlock else "no Landlock"
    who = f"tools run as uid {SANDBOX_UID}" if draft.running_as_root else "tools run as the engine's uid"
    if draft.seccomp_problem is None:
        seccomp_text = "seccomp filter in force"
    elif draft.allow_weak:
        seccomp_text = f"NO seccomp filter ({draft.seccomp_problem}; {ALLOW_WEAK_ENV}=1)"
    else:
        seccomp_text = (
            f"NO seccomp filter ({draft.seccomp_problem}): tools are refused; install "
            f"pyseccomp and libseccomp2, or set {ALLOW_WEAK_ENV}=1 to run them without it"
        )
    pool = draft.pool_problem()
    pool_text = "pool: available" if pool is None else f"pool: unavailable ({pool})"
    if problem is None:
        summary = (
            f"sandbox: namespaces (bubblewrap at {bwrap}); {pool_text}; {seccomp_text}; "
            f"{landlock_text}; {draft.memory_cgroup}; {who}"
        )
    else:
        summary = (
            f"sandbox: process only ({problem}); {seccomp_text}; {landlock_text}; "
            f"{draft.memory_cgroup}; {who}"
        )
    return attrs.evolve(draft, default_backend=default, summary=summary)
