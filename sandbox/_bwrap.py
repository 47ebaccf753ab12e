"""The bubblewrap command line for one call: the namespaces backend's whole policy.

bubblewrap is "not a complete, ready-made sandbox" — the flags are the policy, so all of
them are built here, in one place:

- new user, pid, ipc, uts and cgroup namespaces, and a new network namespace unless the
  tool declares `network`; `--disable-userns` (no nested user namespace, so no
  capabilities to win inside); `--die-with-parent`, `--new-session`, `--cap-drop ALL`;
- the seccomp filter of `_seccomp` (`--seccomp FD`), loaded just before the exec;
- `--clearenv` and exactly the Spec's env; options travel through `--args FD` (a memfd)
  so that env values never appear in /proc/*/cmdline;
- /usr and the /bin, /sbin, /lib* entries of the host (symlinks re-created as
  symlinks) read-only; from /etc only the files a program needs to start (the dynamic
  loader cache, passwd/group, time zone, TLS roots; resolver files with network);
  /etc/shadow and the rest of /etc are simply absent;
- a private /proc, a minimal /dev (new devpts: the host's terminals are not there)
  remounted read-only, and sized tmpfs mounts for /tmp, /dev/shm and the per-call work
  dir (`_limits.tmpfs_sizes`): scratch space is RAM, and without a size each would be
  half the host's;
- the per-call work dir (the sized tmpfs, mounted at its host path) and
  `writable_paths` read-write, `readable_paths` read-only, all at their host paths;
  `python_packages` read-only under /run/sconnect/pkgs (each one alone, never its
  parent); the runner under /run/sconnect/runner;
- with `proxy_socket` (network by destination): the network namespace stays private
  (loopback only, no route out); the engine's proxy socket is bound read-only at
  PROXY_MOUNT, the runner starts a forwarder on 127.0.0.1:PROXY_PORT inside (the
  namespace's own loopback) before the tool, and HTTP_PROXY/HTTPS_PROXY (and their
  lower-case forms) point at it; no resolver files (the proxy resolves names);
- `--remount-ro /` last, so the tmpfs root itself is not writable (trap 3).
"""

from __future__ import annotations

import json
import os

from ._errors import SpecError
from ._limits import prlimit_args, rlimits, tmpfs_sizes
from ._spec import Spec

RUNNER_MOUNT = "/run/sconnect/runner"
PACKAGES_MOUNT = "/run/sconnect/pkgs"
PROXY_MOUNT = "/run/sconnect/proxy.sock"
PROXY_PORT = 3128
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")

_SYSTEM_TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
)
_ETC_NETWORK = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
)


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_TOP:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def package_mounts(spec: Spec) -> dict[str, str]:
    """Sandbox path -> host path of each python package (SpecError on a clash)."""
    mounts: dict[str, str] = {}
    for host in spec.python_packages:
        inside = f"{PACKAGES_MOUNT}/{os.path.basename(os.path.normpath(host))}"
        if inside in mounts:
            raise SpecError(f"python_packages: two entries are named {os.path.basename(host)!r}")
        mounts[inside] = os.path.normpath(host)
    return mounts


def check_cwd(spec: Spec, work_dir: str) -> str:
    """The directory the tool starts in (SpecError when it would not be visible)."""
    if spec.cwd is None:
        return work_dir
    cwd = os.path.normpath(spec.cwd)
    for root in (work_dir, *spec.writable_paths, *spec.readable_paths):
        root = os.path.normpath(root)
        if cwd == root or cwd.startswith(root.rstrip("/") + "/"):
            return cwd
    raise SpecError(f"cwd {spec.cwd!r} is not inside the work dir or a declared path")


def options(
    spec: Spec,
    *,
    work_dir: str,
    runner_dir: str | None,
    seccomp_fd: int | None,
    disable_userns: bool = True,
) -> list[str]:
    """bwrap options (for `--args`), ending just before the command."""
    args = [
        "--unshare-user",
        *(["--disable-userns"] if disable_userns else []),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
    ]
    if not spec.network:
        args.append("--unshare-net")
    env = dict(spec.env)
    if spec.proxy_socket is not None:
        env.update(dict.fromkeys(PROXY_ENV, f"http://127.0.0.1:{PROXY_PORT}"))
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += _system_mounts()
    for path in _ETC_FILES + (_ETC_NETWORK if spec.network else ()):
        args += ["--ro-bind-try", path, path]
    sizes = tmpfs_sizes(spec)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(sizes["shm"]), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--size", str(sizes["tmp"]), "--tmpfs", "/tmp"]
    binds: list[tuple[str, ...]] = [("--perms", "0700", "--size", str(sizes["work"]), "--tmpfs", work_dir)]
    binds += [("--bind", path, path) for path in spec.writable_paths]
    binds += [("--ro-bind", path, path) for path in spec.readable_paths]
    # Parents before children, so that a bind below another one is not hidden by it.
    for bind in sorted(binds, key=lambda bind: bind[-1].rstrip("/").count("/")):
        args += bind
    if runner_dir is not None:
        args += ["--ro-bind", runner_dir, RUNNER_MOUNT]
    for inside, host in package_mounts(spec).items():
        args += ["--ro-bind", host, inside]
    if spec.proxy_socket is not None:
        args += ["--ro-bind", spec.proxy_socket, PROXY_MOUNT]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--chdir", check_cwd(spec, work_dir), "--remount-ro", "/"]
    return args


def command(spec: Spec, *, python: str, report_fd: int | None = None) -> list[str]:
    """What bwrap execs inside the sandbox: prlimit + argv, or the Python runner (which
    starts the proxy forwarder first when the spec has a proxy socket)."""
    forward = {"socket": PROXY_MOUNT, "port": PROXY_PORT} if spec.proxy_socket is not None else None
    if spec.python is None:
        argv = ["/usr/bin/prlimit", *prlimit_args(spec), *spec.argv]
        if forward is None:
            return argv
        # argv form, not JSON: the runner then starts the forwarder and execs without
        # importing json (~8 ms per call)
        return [python, "-I", "-S", f"{RUNNER_MOUNT}/_runner.py", f"--forward={PROXY_MOUNT}:{PROXY_PORT}", "--", *argv]
    config = {
        "forward": forward,
        "mode": "call",
        "target": spec.python,
        "sys_path": [PACKAGES_MOUNT] if spec.python_packages else [],
        "limits": rlimits(spec),
        "report_fd": report_fd,
    }
    return [python, "-I", "-S", f"{RUNNER_MOUNT}/_runner.py", json.dumps(config)]
