"""Who a tool runs as, what it can leave behind, and what it can see (issue 11 items 11, 12).

- test_tool_runs_as_a_dedicated_uid (root): tools run as `SANDBOX_UID`, not the host's
  shared nobody (65534);
- test_setuid_program_cannot_be_planted: a tool copies a program into a host-visible
  writable directory and sets its set-uid / set-gid bit (chmod, and create with the mode):
  refused, and on the host the file carries no set-id bit;
- test_writable_paths_are_nosuid: inside the sandbox, the host-visible writable
  directory is mounted nosuid,nodev, so a set-id bit there would be inert anyway;
- test_nobody_cannot_read_a_running_tool_environment (root): while a tool holding a
  secret in its environment runs, a process running as 65534 tries to read its
  /proc/PID/environ and fails;
- test_host_command_lines_are_invisible: a host process carries a marker in its command
  line (as `sconnect chat --token ...` would); a tool scanning every /proc/*/cmdline it
  can see does not find it, under both backends (the process backend gets its own pid
  namespace and /proc); the host itself sees the marker (control);
- test_process_backend_hides_processes_without_cap_sys_admin (root): under the shipped
  systemd unit's capability set (no CAP_SYS_ADMIN, so no plain pid namespace: control),
  a process-backend tool still sees only its own processes and runs as the sandbox uid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import sandbox
from tests.sandbox.conftest import (  # noqa: F401  (fixtures)
    PY,
    Runner,
    backend,
    no_leftovers,
    processes_with,
    shared_dir,
    token,
    tool,
    wait_until_fixture,
    work_root,
)


def _usable(isolation: str) -> None:
    caps = sandbox.detect()
    if isolation == "namespaces" and caps.namespaces_problem() is not None:
        pytest.skip(f"namespaces backend unusable here: {caps.namespaces_problem()}")
    if caps.seccomp_problem is not None:
        pytest.skip(f"the seccomp filter cannot be built here: {caps.seccomp_problem}")


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("tools change uid only when the engine runs as root")


async def test_tool_runs_as_a_dedicated_uid(tool: Runner) -> None:  # noqa: F811
    _usable(tool.isolation)
    _root()
    result = await tool.run(argv=("/usr/bin/id", "-u"))
    assert result.status == "ok", result
    assert int(result.output) == sandbox.SANDBOX_UID != 65534


@pytest.fixture
def drop_dir(shared_dir: str) -> str:  # noqa: F811
    path = os.path.join(shared_dir, "drop")
    os.mkdir(path, 0o755)
    if os.geteuid() == 0:
        os.chown(path, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
    return path


async def test_setuid_program_cannot_be_planted(tool: Runner, drop_dir: str) -> None:  # noqa: F811
    _usable(tool.isolation)
    script = (
        f"cd {drop_dir} && cp /usr/bin/id planted && "
        "chmod 4755 planted; a=$?; chmod g+s planted; b=$?; "
        "python3 -I -S -c \"import os; os.close(os.open('made', os.O_CREAT|os.O_WRONLY, 0o6755))\"; "
        "c=$?; echo $a $b $c"
    )
    result = await tool.run(argv=("/bin/sh", "-c", script), writable_paths=(drop_dir,))
    assert result.status == "ok", result
    assert result.output["text"].split() == ["1", "1", "1"], result
    for name in os.listdir(drop_dir):
        assert os.stat(os.path.join(drop_dir, name)).st_mode & 0o6000 == 0, name


async def test_writable_paths_are_nosuid(tool: Runner, drop_dir: str) -> None:  # noqa: F811
    _usable(tool.isolation)
    result = await tool.run(argv=("/bin/cat", "/proc/self/mountinfo"), writable_paths=(drop_dir,))
    assert result.status == "ok", result
    [line] = [line for line in result.output["text"].splitlines() if line.split()[4] == drop_dir]
    options = line.split()[5].split(",")
    assert "nosuid" in options and "nodev" in options


async def test_nobody_cannot_read_a_running_tool_environment(
    tool: Runner, token: str, wait_until: Any  # noqa: F811
) -> None:
    _usable(tool.isolation)
    _root()
    secret = uuid.uuid4().hex
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: tool.run(argv=("/bin/sleep", "60"), env={"SECRET": secret}))
            await trio.to_thread.run_sync(lambda: wait_until(lambda: processes_with(token)))
            pid = processes_with(token)[0]
            with open(f"/proc/{pid}/environ", "rb") as handle:  # noqa: ASYNC230
                assert secret.encode() in handle.read()  # control: root sees it
            attempt = await trio.run_process(
                ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                 "/bin/cat", f"/proc/{pid}/environ"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert attempt.returncode != 0
    assert secret.encode() not in attempt.stdout
    assert b"Permission denied" in attempt.stderr


@pytest.fixture
def marked_host_process() -> Iterator[str]:
    marker = f"sconnect-marker-{uuid.uuid4().hex}"
    process = subprocess.Popen(["/bin/sh", "-c", "read line", marker], stdin=subprocess.PIPE)
    try:
        yield marker
    finally:
        process.kill()
        process.wait()


SCAN = """
import json, os, sys
marker = json.load(sys.stdin)["marker"].encode()
seen, found = 0, []
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        seen += 1
        if marker in data:
            found.append(name)
print(json.dumps({"seen": seen, "found": found}))
"""


async def test_host_command_lines_are_invisible(
    tool: Runner, marked_host_process: str, wait_until: Any  # noqa: F811
) -> None:
    _usable(tool.isolation)
    # control: the host sees it
    assert wait_until(lambda: processes_with_cmdline(marked_host_process))
    result = await tool.py(SCAN, {"marker": marked_host_process})
    assert result.status == "ok", result
    assert result.output["seen"] >= 1  # the scan worked: it saw its own process
    assert result.output["found"] == []


def processes_with_cmdline(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(name))
            except OSError:
                continue
    return found



NO_SYS_ADMIN_CALL = """
import json, os, sys, tempfile, trio
import sandbox
root = tempfile.mkdtemp(prefix="sconnect-nsa-")
os.chmod(root, 0o755)
code = ("import os, json; print(json.dumps({'uid': os.getuid(), "
        "'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))")
spec = sandbox.Spec(argv=("/usr/bin/python3", "-I", "-S", "-c", code), isolation="process",
                    work_root=root + "/work")
result = trio.run(sandbox.run, spec, {})
print(json.dumps({"status": result.status, "output": result.output, "message": result.message}))
"""


def test_process_backend_hides_processes_without_cap_sys_admin() -> None:
    _root()
    _usable("process")
    no_admin = ["/usr/bin/setpriv", "--bounding-set", "-sys_admin", "--"]
    control = subprocess.run([*no_admin, "/usr/bin/unshare", "-p", "/bin/true"],
                             capture_output=True, check=False)  # fmt: skip
    assert control.returncode != 0  # control: no plain pid namespace without the capability
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [*no_admin, sys.executable, "-c", NO_SYS_ADMIN_CALL], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": repo}, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok", report
    assert report["output"]["uid"] == sandbox.SANDBOX_UID
    assert report["output"]["pids"] == [1, 2]  # the namespace's init and the tool itself
