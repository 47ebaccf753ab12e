"""Tests for sconnect_tools.shell."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from sconnect_tools import shell


@pytest.fixture(autouse=True)
def _in_workspace(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_runs_in_the_workspace(tmp_path: pathlib.Path) -> None:
    (tmp_path / "hello.txt").write_text("hi")
    result = shell.run("pwd; cat hello.txt; echo oops >&2")
    assert result == {
        "command": "pwd; cat hello.txt; echo oops >&2",
        "exit_code": 0,
        "stdout": f"{tmp_path}\nhi",
        "stderr": "oops\n",
        "truncated": False,
        "timed_out": False,
    }


def test_failure_is_a_result_not_an_exception() -> None:
    result = shell.run("echo partial; exit 7")
    assert result["exit_code"] == 7
    assert result["stdout"] == "partial\n"
    missing = shell.run("no-such-command-here")
    assert missing["exit_code"] == 127
    assert "not found" in missing["stderr"]
    assert shell.run("kill -9 $$")["exit_code"] == -9


def test_output_is_capped_and_drained() -> None:
    # 1 MB on stdout: the command must not block on a full pipe, and we keep 64 KiB.
    result = shell.run("head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2")
    assert result["exit_code"] == 0
    assert result["truncated"] is True
    assert result["stdout"] == "x" * shell.MAX_OUTPUT_BYTES
    assert result["stderr"] == "done\n"


def test_invalid_utf8_is_replaced() -> None:
    assert shell.run("printf 'a\\377b'")["stdout"] == "a\ufffdb"


def test_timeout_kills_the_whole_group() -> None:
    started = time.monotonic()
    result = shell.run("echo before; sleep 30 & sleep 30; echo never", timeout=0.3)
    assert time.monotonic() - started < 3
    assert result["timed_out"] is True
    assert result["exit_code"] is None
    assert result["stdout"] == "before\n"


def test_background_jobs_do_not_outlive_the_call() -> None:
    started = time.monotonic()
    result = shell.run("sleep 30 & echo $!")
    assert time.monotonic() - started < 3  # does not wait for the background job
    assert result["exit_code"] == 0
    pid = int(result["stdout"])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": ""}, "non-empty"),
        ({"command": "   "}, "non-empty"),
        ({"command": 5}, "non-empty"),
        ({"command": "echo \x00"}, "NUL"),
        ({"command": "x" * (64 * 1024 + 1)}, "longer than"),
        ({"command": "echo \ud800"}, "unpaired surrogates"),
        ({"command": "true", "timeout": 0}, "more than 0"),
        ({"command": "true", "timeout": -1}, "more than 0"),
        ({"command": "true", "timeout": 61}, "at most 60"),
        ({"command": "true", "timeout": float("nan")}, "more than 0"),
        ({"command": "true", "timeout": True}, "number of seconds"),
        ({"command": "true", "timeout": "5"}, "number of seconds"),
    ],
)
def test_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shell.run(**kwargs)  # type: ignore[arg-type]


def test_max_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL_MAX_TIMEOUT_S", "5")
    with pytest.raises(ValueError, match="at most 5 seconds"):
        shell.run("true", timeout=6)
    assert shell.run("true", timeout=5)["exit_code"] == 0
    monkeypatch.setenv("SHELL_MAX_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="SHELL_MAX_TIMEOUT_S"):
        shell.run("true")


def test_runs_in_sandbox_python(run_tool, tmp_path: pathlib.Path) -> None:
    # Empty environment, as in the sandbox: PATH falls back to a default.
    ok = run_tool("shell", "run", {"command": "ls; echo $PATH; exit 3"})
    assert ok.returncode == 0, ok.stderr
    assert ok.result["exit_code"] == 3
    assert ok.result["stdout"].endswith(shell.DEFAULT_PATH + "\n")
    env = run_tool("shell", "run", {"command": "echo $GREETING"}, env={"GREETING": "hallo"})
    assert env.result["stdout"] == "hallo\n"
    refused = run_tool("shell", "run", {"command": "true", "timeout": 999})
    assert refused.returncode == 1 and refused.stderr.startswith("ValueError: ")
    assert os.listdir(tmp_path) == []
