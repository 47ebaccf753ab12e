"""`detect()`: which isolation this host offers, probed once and cached.

The probe starts a real minimal bubblewrap sandbox exactly the way the namespaces
backend does (as `SANDBOX_UID` through setpriv when root, empty environment), so "user
namespaces work" means "our sandbox starts", not merely "a sysctl says yes". It blocks
for a few milliseconds (at most 10 s): call it at startup (`sconnect check`, server
start), not per request; `backend_for()` uses the cached value.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import attrs

from ._landlock import abi_version
from ._workdir import SANDBOX_UID, sandbox_user


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
        return None


def _probe(bwrap: str, setpriv: str | None) -> bool:
    argv = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
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
    userns = bwrap is not None and _probe(bwrap, setpriv)
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
    )
    problem = draft.namespaces_problem()
    default = "namespaces" if problem is None else "process"
    landlock_text = f"Landlock ABI {landlock}" if landlock else "no Landlock"
    who = f"tools run as uid {SANDBOX_UID}" if draft.running_as_root else "tools run as the engine's uid"
    if problem is None:
        summary = f"sandbox: namespaces (bubblewrap at {bwrap}); {landlock_text}; {who}"
    else:
        summary = f"sandbox: process only ({problem}); {landlock_text}; {who}"
    return attrs.evolve(draft, default_backend=default, summary=summary)
