"""Escape attempts: each must fail inside the sandbox and leave the host untouched.

Every case runs on both backends unless noted. Where a check could pass for a reason
unrelated to the sandbox, a positive control shows the same action working outside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
import trio

import sandbox
from tests.sandbox.conftest import TOOL_UID, require_root

PY = ("/usr/bin/python3", "-I", "-S", "-c")

TRY_READ = """
import json, sys
out = {}
for path in json.load(sys.stdin)["paths"]:
    try:
        out[path] = open(path, "rb").read().decode("latin-1")
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""


async def test_etc_shadow_is_unreadable(tool: Any) -> None:
    if os.geteuid() == 0:
        assert open("/etc/shadow").read().startswith("root:")  # control: it is readable here
    result = await tool.run({"paths": ["/etc/shadow"]}, argv=(*PY, TRY_READ))
    assert result.status == "ok", result
    assert result.output["/etc/shadow"] in ("FileNotFoundError", "PermissionError")


async def test_engine_secret_file_is_unreadable(tool: Any, shared_dir: str) -> None:
    state = os.path.join(shared_dir, "state")
    os.mkdir(state, 0o700)
    secret = os.path.join(state, "jwt.key")
    with open(secret, "w") as handle:
        handle.write("TOPSECRET")
    os.chmod(secret, 0o600)
    # A secret the tool's uid could read by file permissions alone (an engine not running
    # as root): only the sandbox keeps it out.
    loose = os.path.join(shared_dir, "loose.key")
    with open(loose, "w") as handle:
        handle.write("TOPSECRET")
    os.chmod(loose, 0o644)
    result = await tool.run({"paths": [secret, loose]}, argv=(*PY, TRY_READ))
    assert result.status == "ok", result
    assert "TOPSECRET" not in json.dumps(result.output)
    assert result.output[secret] in ("FileNotFoundError", "PermissionError")
    assert result.output[loose] in ("FileNotFoundError", "PermissionError")


async def test_engine_environment_is_not_visible(tool: Any) -> None:
    with open("/proc/self/environ", "rb") as handle:
        ours = handle.read().decode("latin-1")
    assert "PATH=" in ours  # control: the test process has an environment to leak
    code = TRY_READ.replace(
        'json.load(sys.stdin)["paths"]',
        'json.load(sys.stdin)["paths"] + ["/proc/%d/environ" % os.getppid(), "/proc/1/environ"]',
    ).replace("import json, sys", "import json, os, sys")
    result = await tool.run({"paths": [f"/proc/{os.getpid()}/environ"]}, argv=(*PY, code))
    assert result.status == "ok", result
    for path, content in result.output.items():
        for entry in ours.split("\0"):
            if entry:
                assert entry not in content, (path, entry)


WRITE = """
import json, os, sys
out = {}
for path in json.load(sys.stdin)["paths"]:
    try:
        with open(path, "w") as handle:
            handle.write("pwned")
        out[path] = "written"
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""


async def test_writes_outside_the_work_dir_do_not_reach_the_host(tool: Any, shared_dir: str) -> None:
    open_dir = os.path.join(shared_dir, "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)  # writable by anybody: only the sandbox can stop the write
    readonly_dir = os.path.join(shared_dir, "ro")
    os.mkdir(readonly_dir)
    os.chmod(readonly_dir, 0o777)
    targets = [
        os.path.join(open_dir, "x"),
        os.path.join(readonly_dir, "x"),
        "/etc/pwned",
        "/pwned",
        "/usr/pwned",
        "/tmp/sconnect-pwned",
    ]
    result = await tool.run({"paths": targets}, argv=(*PY, WRITE), readable_paths=(readonly_dir,))
    assert result.status == "ok", result
    for path in targets:
        assert not os.path.exists(path), path
    for path in targets[:5]:
        assert result.output[path] != "written", path
    if tool.isolation == "process":
        assert result.output["/tmp/sconnect-pwned"] != "written"
    # namespaces: /tmp is a private tmpfs, the write lands there and vanishes


async def test_write_through_planted_symlink(tool: Any, shared_dir: str) -> None:
    victim = os.path.join(shared_dir, "victim.txt")
    with open(victim, "w") as handle:
        handle.write("original")
    os.chmod(victim, 0o666)
    os.chmod(shared_dir, 0o755)
    code = (
        "import os, sys, json\n"
        "target = json.load(sys.stdin)['target']\n"
        "os.symlink(target, 'link')\n"
        "try:\n"
        "    open('link', 'w').write('pwned'); print('written')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    result = await tool.run({"target": victim}, argv=(*PY, code))
    assert result.status == "ok", result
    assert open(victim).read() == "original"
    if tool.isolation == "process":
        assert result.output["text"].strip() in ("FileNotFoundError", "PermissionError")
    # namespaces: the host file is not mounted; the path resolves into the private /tmp


CONNECT = """
import json, socket, sys
port = json.load(sys.stdin)["port"]
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


async def test_no_network_means_no_tcp_to_localhost(tool: Any) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    with listener:
        result = await tool.run({"port": port}, argv=(*PY, CONNECT))
        assert result.status == "ok", result
        assert result.output["text"].strip() != "connected"
        if tool.isolation == "namespaces":
            # control: the same tool with network reaches the listener
            allowed = await tool.run({"port": port}, argv=(*PY, CONNECT), network=True)
            assert allowed.output["text"].strip() == "connected"


KILL = """
import json, os, signal, sys
args = json.load(sys.stdin)
out = {}
for name, pid in (("victim", args["victim"]), ("engine", args["engine"]), ("all", -1)):
    try:
        os.kill(pid, signal.SIGKILL if name != "engine" else 0)
        out[name] = "sent"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture
def victim() -> Any:
    """A host process running as the tools' uid (the sandbox user when root, else ours)."""
    drop = ["/usr/bin/setpriv", f"--reuid={sandbox.SANDBOX_UID}", f"--regid={sandbox.SANDBOX_GID}",
            "--clear-groups", "--"] if os.geteuid() == 0 else []  # fmt: skip
    process = subprocess.Popen([*drop, "/bin/sleep", "60"], env={})
    yield process
    process.kill()
    process.wait()


async def test_cannot_signal_host_processes(tool: Any, victim: Any) -> None:
    result = await tool.run({"victim": victim.pid, "engine": os.getpid()}, argv=(*PY, KILL))
    assert result.status == "ok", result
    assert victim.poll() is None, "the host process was killed"
    assert result.output["victim"] != "sent"
    assert result.output["engine"] != "sent"


TIOCSTI = """
import fcntl, json, os, sys, termios
out = {}
for path in json.load(sys.stdin)["paths"] + ["/dev/tty"]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        out[path] = "open:" + type(exc).__name__
        continue
    try:
        for ch in b"id\\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
        out[path] = "injected"
    except OSError as exc:
        out[path] = "ioctl:" + type(exc).__name__
print(json.dumps(out))
"""


async def test_tiocsti_cannot_inject_into_a_host_terminal(tool: Any) -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        os.chmod(path, 0o666)  # even a terminal the tool's uid may open must stay safe
        result = await tool.run({"paths": [path]}, argv=(*PY, TIOCSTI))
        assert result.status == "ok", result
        assert "injected" not in result.output.values(), result.output
        os.set_blocking(master, False)
        try:
            leaked = os.read(master, 100)
        except BlockingIOError:
            leaked = b""
        assert b"id" not in leaked
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def setuid_id(shared_dir: str) -> str:
    bin_dir = os.path.join(shared_dir, "bin")
    os.mkdir(bin_dir, 0o755)
    path = os.path.join(bin_dir, "id")
    shutil.copy("/usr/bin/id", path)
    require_root("a set-uid-root program to try is made by chown to root")
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    return path


async def test_setuid_binary_gives_no_privilege(tool: Any, setuid_id: str) -> None:
    control = subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={sandbox.SANDBOX_UID}", f"--regid={sandbox.SANDBOX_GID}",
         "--clear-groups", "--", setuid_id],
        capture_output=True, text=True, env={}, check=True,
    )
    assert "euid=0" in control.stdout  # control: outside the sandbox the bit works
    result = await tool.run(argv=(setuid_id,), readable_paths=(os.path.dirname(setuid_id),))
    assert result.status == "ok", result
    assert result.output["text"].startswith(f"uid={TOOL_UID}")
    assert "euid=0" not in result.output["text"]


async def test_su_does_not_escalate(tool: Any) -> None:
    result = await tool.run(argv=("/bin/su", "-c", "id -u", "root"), timeout_s=5)
    assert result.status in ("error", "ok")
    assert result.status == "error" or (result.output or {}).get("text", "").strip() != "0"
    assert result.exit_code != 0 or result.signal is not None


async def test_namespaces_sandbox_is_unprivileged_and_isolated(ns_tool: Any) -> None:
    code = (
        "import json, os\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "print(json.dumps({k: status[k].strip() for k in ('Uid', 'CapEff', 'NoNewPrivs')} |"
        " {'pid': os.getpid(), 'root': sorted(os.listdir('/')), 'hostname': os.uname().nodename}))"
    )
    result = await ns_tool.py(code)
    assert result.status == "ok", result
    assert result.output["CapEff"] == "0000000000000000"
    assert result.output["NoNewPrivs"] == "1"
    assert result.output["Uid"].split()[0] == str(TOOL_UID)
    assert result.output["pid"] < 10  # its own pid namespace
    assert "root" not in result.output["root"] and "work" not in result.output["root"]
