"""Run a shell command in the workspace and report what it did.

``run(command, timeout=20)`` runs ``/bin/sh -c command`` in the current directory (the
sandbox's workspace) and returns::

    {"command": "ls -l", "exit_code": 0, "stdout": "...", "stderr": "",
     "truncated": false, "timed_out": false}

- A command that fails is a *result*, not an error: ``exit_code`` carries its status
  (negative ``-N`` when it was killed by signal N, as :mod:`subprocess` reports it).
- stdout and stderr are captured separately, each capped at 64 KiB; output beyond the
  cap is read and thrown away (so the command never blocks on a full pipe) and
  ``truncated`` is set. Text is decoded as UTF-8 with invalid bytes replaced.
- stdin is ``/dev/null``. The environment is the tool's own (the sandbox clears it and
  sets only what the tool's YAML declares); ``PATH`` gets a standard default when the
  YAML sets none, so that ``ls`` and friends are found.
- ``timeout`` (seconds, default 20) is this tool's own limit and should sit below the
  sandbox's so that partial output still comes back: when it expires the command's
  whole process group is killed, ``timed_out`` is true and ``exit_code`` is null. The
  largest timeout accepted is ``SHELL_MAX_TIMEOUT_S`` from the environment (default 60).
- The command runs in its own process group, and that group is killed when the shell
  exits: background jobs (``cmd &``) do not outlive the call. Output they write within
  0.2 s of the shell's exit is still collected.

Error handling: an empty command, one containing NUL, one longer than 64 KiB or a
timeout out of range raises ``ValueError``; a missing ``/bin/sh`` surfaces as the
``OSError`` from starting it. The sandbox's own timeout (a kill from outside) ends
this runner too; the command's group dies with the sandbox's pid namespace.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import os
import selectors
import signal
import subprocess
import time

__all__ = ["run"]

MAX_OUTPUT_BYTES = 64 * 1024
MAX_COMMAND_BYTES = 64 * 1024
DEFAULT_MAX_TIMEOUT_S = 60.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# How long background children may keep the pipes open after the shell itself exits.
EXIT_GRACE_S = 0.2
# Poll interval while waiting: a shell whose pipes are held open by a background job
# exits without an EOF, so its exit has to be noticed by polling.
_POLL_S = 0.05


def run(command: str, timeout: float = 20) -> dict[str, object]:
    """Run ``command`` with ``/bin/sh -c`` in the workspace; see the module docstring."""
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must be a non-empty string, e.g. 'ls -la'")
    if "\x00" in command:
        raise ValueError("command must not contain NUL bytes")
    try:
        encoded = command.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("command contains unpaired surrogates and is not valid text") from None
    if len(encoded) > MAX_COMMAND_BYTES:
        raise ValueError(f"command is longer than {MAX_COMMAND_BYTES} bytes")
    timeout_s = _check_timeout(timeout)

    env = dict(os.environ)
    env.setdefault("PATH", DEFAULT_PATH)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # own process group, so one killpg reaches every child
    )
    try:
        stdout, stderr, truncated, timed_out = _collect(proc, timeout_s)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return {
        "command": command,
        "exit_code": None if timed_out else proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": truncated,
        "timed_out": timed_out,
    }


def _check_timeout(timeout: object) -> float:
    limit = _max_timeout()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds (0 < timeout <= {limit:g})")
    if not math.isfinite(timeout) or not 0 < timeout <= limit:
        raise ValueError(f"timeout must be more than 0 and at most {limit:g} seconds")
    return float(timeout)


def _max_timeout() -> float:
    raw = os.environ.get("SHELL_MAX_TIMEOUT_S", "")
    if not raw:
        return DEFAULT_MAX_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SHELL_MAX_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"SHELL_MAX_TIMEOUT_S={raw!r} must be a positive number of seconds")
    return value


def _collect(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, str, bool, bool]:
    """Read both pipes until EOF, the timeout, or shortly after the shell exits."""
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    overflow = False
    timed_out = False
    deadline = time.monotonic() + timeout_s
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now >= exited_at + EXIT_GRACE_S:
                break
            if now >= deadline:
                timed_out = True
                break
            wait = min(deadline - now, _POLL_S)
            for key, _ in selector.select(wait):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer = buffers[key.fd]
                room = MAX_OUTPUT_BYTES - len(buffer)
                if len(chunk) > room:
                    overflow = True
                buffer += chunk[: max(room, 0)]
    stdout = _decode(buffers[proc.stdout.fileno()], overflow)
    stderr = _decode(buffers[proc.stderr.fileno()], overflow)
    return stdout, stderr, overflow, timed_out


def _decode(data: bytearray, truncated: bool) -> str:
    # final=False when truncated: a multi-byte character cut by the cap is dropped
    # instead of showing up as a replacement character.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(bytes(data), final=not truncated or len(data) < MAX_OUTPUT_BYTES)


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: the group is already gone (every member exited).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
