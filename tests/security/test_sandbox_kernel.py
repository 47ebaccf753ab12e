"""Kernel attack surface inside a tool (issue 11 item 8): each test performs the attack.

Every attack runs as a real tool under both backends (`backend` fixture) and must fail:

- test_nested_user_namespace_is_refused: `unshare -Urm` (uid 0 with every capability in
  a nested namespace) exits non-zero;
- test_dangerous_syscalls_are_refused: io_uring_setup, keyctl, add_key, bpf,
  perf_event_open, userfaultfd, ptrace(PTRACE_ATTACH) of the tool's own child,
  process_vm_readv, mount, personality(ADDR_NO_RANDOMIZE) and clone(CLONE_NEWUSER), each
  called through libc's syscall(), answer EPERM/ENOSYS;
- test_setuid_bit_cannot_be_set: chmod 4755 and open(O_CREAT, 04755) of a file in the
  work dir are refused, so no set-id program can be planted;
- test_ordinary_tools_still_work: the shipped calculator and a shell `ls` still run;
- test_attack_succeeds_without_the_filter (control, namespaces): with the filter and
  --disable-userns turned off, the same io_uring/unshare attacks succeed here, so the
  tests above can fail;
- test_missing_filter_is_refused_by_default: a host without the filter gets
  IsolationUnavailable, unless the operator opted out (SCONNECT_SANDBOX_ALLOW_WEAK);
- test_check_says_loudly_when_the_filter_is_missing: `sconnect check` on a host where
  libseccomp cannot be loaded says "NO seccomp filter ... tools are refused", its trial
  call fails and it exits 1; with SCONNECT_SANDBOX_ALLOW_WEAK=1 the call runs and the
  summary still says NO seccomp filter;
- test_old_bubblewrap_is_not_used: a bubblewrap older than 0.8 (no --size,
  --disable-userns) makes the namespaces backend unavailable rather than unbounded.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import sandbox
from tests.conftest import copy_shipped
from tests.sandbox.conftest import (  # noqa: F401  (fixtures)
    BACKENDS,
    PY,
    Runner,
    backend,
    no_leftovers,
    shared_dir,
    token,
    tool,
    work_root,
)

REPO = Path(__file__).resolve().parents[2]

_NUMBERS = {
    "x86_64": {"io_uring_setup": 425, "keyctl": 250, "add_key": 248, "bpf": 321,
               "perf_event_open": 298, "userfaultfd": 323, "ptrace": 101,
               "process_vm_readv": 310, "mount": 165, "personality": 135, "clone": 56},
    "aarch64": {"io_uring_setup": 425, "keyctl": 219, "add_key": 217, "bpf": 280,
                "perf_event_open": 241, "userfaultfd": 282, "ptrace": 117,
                "process_vm_readv": 270, "mount": 40, "personality": 92, "clone": 220},
}  # fmt: skip

ATTACKS = """
import ctypes, errno, json, os, signal, sys
nr = json.load(sys.stdin)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(nr[name], *args)
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
params = ctypes.create_string_buffer(120)
out = {}
fd = libc.syscall(nr["io_uring_setup"], 4, params)
out["io_uring_setup"] = "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
out["keyctl"] = call("keyctl", 0, ctypes.c_long(-3), 0)  # KEYCTL_GET_KEYRING_ID, session
out["add_key"] = call("add_key", b"user", b"sconnect", b"secret", 6, ctypes.c_long(-3))
out["bpf"] = call("bpf", 0, ctypes.create_string_buffer(128), 128)  # BPF_MAP_CREATE
attr = ctypes.create_string_buffer(128); attr[4] = 128  # size; type 0 = hardware
out["perf_event_open"] = call("perf_event_open", attr, 0, -1, -1, 0)
out["userfaultfd"] = call("userfaultfd", 0)
child = os.fork()
if child == 0:
    signal.pause(); os._exit(0)
out["ptrace"] = call("ptrace", 16, child, 0, 0)  # PTRACE_ATTACH
local = ctypes.create_string_buffer(8)
iov = (ctypes.c_void_p * 2)(ctypes.cast(local, ctypes.c_void_p), 8)
out["process_vm_readv"] = call("process_vm_readv", child, iov, 1, iov, 1, 0)
os.kill(child, signal.SIGKILL); os.waitpid(child, 0)
out["mount"] = call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
out["personality"] = call("personality", 0x0040000)  # ADDR_NO_RANDOMIZE
ctypes.set_errno(0)
pid = libc.syscall(nr["clone"], 0x10000000 | 17, 0, 0, 0, 0)  # CLONE_NEWUSER|SIGCHLD
if pid == 0:
    os._exit(0)  # the attack worked: this is the child in a new user namespace
if pid > 0:
    os.waitpid(pid, 0)
out["clone_newuser"] = "ok" if pid > 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
"""


def _numbers() -> dict[str, int]:
    numbers = _NUMBERS.get(platform.machine())
    if numbers is None:
        pytest.skip(f"syscall numbers not listed for {platform.machine()}")
    return numbers


def _usable(isolation: str) -> None:
    caps = sandbox.detect()
    if isolation == "namespaces" and caps.namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {caps.namespaces_problem()}")
    if caps.seccomp_problem is not None:
        pytest.skip(f"the seccomp filter cannot be built here: {caps.seccomp_problem}")


async def test_nested_user_namespace_is_refused(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    result = await tool.run(argv=("/usr/bin/unshare", "-Urm", "/usr/bin/true"))
    assert result.status == "error", result
    assert "unshare failed" in result.stderr_tail, result.stderr_tail


async def test_dangerous_syscalls_are_refused(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    result = await tool.py(ATTACKS, _numbers())
    assert result.status == "ok", result
    for name, outcome in result.output.items():
        assert outcome in ("EPERM", "ENOSYS"), (name, outcome)


async def test_setuid_bit_cannot_be_set(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    code = (
        "import os, shutil, json\n"
        "shutil.copy('/usr/bin/true', 'planted')\n"
        "out = {}\n"
        "for name, act in (('chmod', lambda: os.chmod('planted', 0o4755)),\n"
        "                  ('chmod_sgid', lambda: os.chmod('planted', 0o2755)),\n"
        "                  ('create', lambda: os.close(os.open('new', os.O_CREAT | os.O_WRONLY, 0o4755)))):\n"
        "    try:\n"
        "        act(); out[name] = 'ok'\n"
        "    except OSError as exc:\n"
        "        out[name] = exc.errno\n"
        "out['modes'] = [oct(os.stat(n).st_mode) for n in ('planted',) + (('new',) if os.path.exists('new') else ())]\n"
        "print(json.dumps(out))\n"
    )
    result = await tool.py(code)
    assert result.status == "ok", result
    assert result.output["chmod"] == result.output["chmod_sgid"] == result.output["create"] == 1
    assert all(int(mode, 8) & 0o6000 == 0 for mode in result.output["modes"])


async def test_ordinary_tools_still_work(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    calc = await tool.run(
        {"expression": "17*23"},
        python="sconnect_tools.calc:evaluate",
        python_packages=(str(REPO / "sconnect_tools"),),
    )
    assert calc.status == "ok", calc
    assert calc.output["result"] == 391
    listing = await tool.run(argv=("/bin/sh", "-c", "ls /usr/bin >/dev/null && ls -la . && echo done"))
    assert listing.status == "ok", listing
    assert listing.output["text"].strip().endswith("done")


async def test_attack_succeeds_without_the_filter(ns_runner: Runner) -> None:
    caps = sandbox.detect()
    if caps.namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {caps.namespaces_problem()}")
    assert caps.bwrap is not None
    weak = sandbox.NamespacesBackend(
        bwrap=caps.bwrap, setpriv=caps.setpriv, python=caps.python, seccomp=False,
        disable_userns=False,
    )  # fmt: skip
    unshare = await sandbox.run(
        ns_runner.spec(argv=("/usr/bin/unshare", "-Urm", "/usr/bin/true")), {}, backend=weak
    )
    attacks = await sandbox.run(ns_runner.spec(argv=(*PY, ATTACKS)), _numbers(), backend=weak)
    assert unshare.status == "ok", unshare
    assert attacks.status == "ok" and "io_uring_setup" in attacks.output, attacks
    assert attacks.output["io_uring_setup"] == "ok"
    assert attacks.output["ptrace"] == "ok"
    assert attacks.output["clone_newuser"] == "ok"


@pytest.fixture
def ns_runner(token: str, work_root: str) -> Runner:  # noqa: F811
    return Runner("namespaces", token, work_root)


@pytest.mark.parametrize("isolation", BACKENDS)
def test_missing_filter_is_refused_by_default(isolation: str) -> None:
    caps = attrs.evolve(sandbox.detect(), seccomp_problem="pyseccomp/libseccomp not usable")
    spec = sandbox.Spec(argv=("/bin/true",), isolation=isolation)  # type: ignore[arg-type]
    if isolation == "namespaces" and caps.namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {caps.namespaces_problem()}")
    with pytest.raises(sandbox.IsolationUnavailable, match="SCONNECT_SANDBOX_ALLOW_WEAK=1"):
        sandbox.backend_for(spec, caps)
    weak = sandbox.backend_for(spec, attrs.evolve(caps, allow_weak=True))
    assert weak.seccomp is False  # type: ignore[attr-defined]


def test_old_bubblewrap_is_not_used() -> None:
    """A bwrap without --size/--disable-userns (< 0.8) cannot bound scratch space: refused."""
    caps = attrs.evolve(sandbox.detect(), disable_userns=False)
    if caps.bwrap is None:
        pytest.skip("bubblewrap is not installed")
    with pytest.raises(sandbox.IsolationUnavailable, match="older than bubblewrap 0.8"):
        sandbox.backend_for(sandbox.Spec(argv=("/bin/true",)), caps)


def _check_without_libseccomp(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "no_libseccomp"
    blocker.mkdir(exist_ok=True)
    # What pyseccomp itself raises at import when libseccomp.so.2 is not installed.
    (blocker / "pyseccomp.py").write_text("raise RuntimeError('Unable to find libseccomp')\n")
    config = tmp_path / "config"
    if not config.exists():
        for name in ("agents.d", "tools.d", "resources.d", "policies"):
            copy_shipped(name, config / name)
    return subprocess.run(
        [sys.executable, "-m", "engine", "check", "--config", str(config)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
             "PYTHONPATH": f"{blocker}{os.pathsep}{REPO}", **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_check_says_loudly_when_the_filter_is_missing(tmp_path: Path) -> None:
    if sandbox.detect().namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {sandbox.detect().namespaces_problem()}")
    refused = _check_without_libseccomp(tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "NO seccomp filter" in refused.stdout and "tools are refused" in refused.stdout
    assert "seccomp filter in force: NO (pyseccomp/libseccomp not usable" in refused.stdout
    assert "trial call: FAILED" in refused.stdout
    weak = _check_without_libseccomp(tmp_path, SCONNECT_SANDBOX_ALLOW_WEAK="1")
    assert weak.returncode == 0, weak.stderr + weak.stdout
    assert "NO seccomp filter" in weak.stdout and "SCONNECT_SANDBOX_ALLOW_WEAK=1" in weak.stdout
    assert "trial call: calculator 6*7 = 42 ok" in weak.stdout
