"""`sandbox.open_session`: a long-lived sandboxed program spoken to over stdin/stdout.

Each test starts a real sandbox (both backends): a line sent through stdin comes back on
stdout; stderr is kept as a bounded tail; the way the program ended is reported; leaving
the context — normally or by Trio cancellation — leaves no process behind; a python
Spec is refused.
"""

from __future__ import annotations

import uuid

import pytest
import trio

import sandbox
from tests.conftest import processes_with

pytestmark = pytest.mark.parametrize("isolation", ["namespaces", "process"])


def _spec(isolation: str, *argv: str, **limits: object) -> sandbox.Spec:
    if isolation == "namespaces" and sandbox.detect().namespaces_problem() is not None:
        pytest.skip(sandbox.detect().namespaces_problem())
    return sandbox.Spec(argv=argv, isolation=isolation, **limits)  # type: ignore[arg-type]


async def _gone(marker: str) -> bool:
    """Whether every process whose argv holds `marker` is gone (bounded wait, no sleep-and-hope)."""
    with trio.move_on_after(5):
        while processes_with(marker):  # noqa: ASYNC110 (polling /proc: there is no event to wait on)
            await trio.sleep(0.02)
    return not processes_with(marker)


async def test_lines_go_through_and_the_program_is_killed_on_exit(isolation: str) -> None:
    marker = f"session-{uuid.uuid4().hex}"
    spec = _spec(isolation, "/bin/sh", "-c", f"cat # {marker}")
    with trio.fail_after(20):
        async with sandbox.open_session(spec) as session:
            await session.stdin.send_all(b"hello\n")
            received = b""
            while not received.endswith(b"\n"):
                received += await session.stdout.receive_some(100)
            assert received == b"hello\n"
            assert session.exit_message() is None
            assert processes_with(marker)
        assert session.exited.is_set()
        assert await _gone(marker)


async def test_exit_code_and_a_bounded_stderr_tail(isolation: str) -> None:
    spec = _spec(isolation, "/bin/sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x >&2; echo last >&2; exit 3",
                 max_stderr_bytes=100)
    with trio.fail_after(20):
        async with sandbox.open_session(spec) as session:
            await session.exited.wait()
            assert session.exit_message() == "exited with code 3"
        tail = session.stderr_tail()
        assert tail.endswith("last\n") and len(tail) == 100


async def test_cancellation_kills_the_whole_sandbox(isolation: str) -> None:
    marker = f"session-{uuid.uuid4().hex}"
    # A child that leaves the process group and the session: the kill must still reach it.
    stay = f"sh -c 'sleep 300; :' {marker}"  # the marker is the shell's $0: in its argv
    spec = _spec(isolation, "/bin/sh", "-c", f"setsid {stay} & {stay}")
    with trio.fail_after(20):
        with trio.move_on_after(60) as scope:
            async with sandbox.open_session(spec) as session:
                while len([pid for pid in processes_with(marker) if pid != session.pid]) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert await _gone(marker)


async def test_a_python_spec_is_not_a_session(isolation: str) -> None:
    spec = sandbox.Spec(python="json:dumps", isolation=isolation)  # type: ignore[arg-type]
    with pytest.raises(sandbox.SpecError, match="argv program"):
        async with sandbox.open_session(spec):
            pass


async def test_a_session_is_confined_like_a_one_shot_call(isolation: str) -> None:
    """Same launcher as `sandbox.run`: the same uid, seccomp mode, no_new_privs and
    capabilities inside (a guard that sessions keep up with the one-shot hardening)."""
    probe = "grep -E '^(Uid|Gid|Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status"
    spec = _spec(isolation, "/bin/sh", "-c", probe)
    with trio.fail_after(20):
        one_shot = await sandbox.run(spec, {})
        assert one_shot.status == "ok", one_shot
        async with sandbox.open_session(spec) as session:
            received = b""
            while chunk := await session.stdout.receive_some(4096):
                received += chunk
    shown = one_shot.output["text"] if isinstance(one_shot.output, dict) else str(one_shot.output)
    assert received.decode() == shown
    assert "Seccomp" in shown
