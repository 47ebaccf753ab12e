"""Tests for sconnect_tools.files: workspace I/O and every way out of the workspace."""

from __future__ import annotations

import os
import pathlib

import pytest

from sconnect_tools import files


@pytest.fixture
def workspace(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A workspace directory as cwd, with a sibling directory that must stay untouched."""
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    monkeypatch.chdir(ws)
    return ws


def test_write_read_list_round_trip(workspace: pathlib.Path) -> None:
    assert files.write("notes/day 1/todo.txt", "héllo\n") == {
        "path": "notes/day 1/todo.txt",
        "bytes_written": 7,
    }
    assert (workspace / "notes" / "day 1" / "todo.txt").read_text() == "héllo\n"
    assert files.write("notes/day 1/todo.txt", "more\n", append=True)["bytes_written"] == 5
    assert files.read("notes/day 1/todo.txt") == {
        "path": "notes/day 1/todo.txt",
        "content": "héllo\nmore\n",
        "size": 12,
        "truncated": False,
    }
    files.write("notes/day 1/todo.txt", "replaced")
    assert files.read("./notes//day 1/../day 1/todo.txt")["content"] == "replaced"

    (workspace / "a.bin").write_bytes(b"\xff\x00abc")
    os.symlink("a.bin", workspace / "link")
    listing = files.list_dir(".")
    assert listing == {
        "path": ".",
        "entries": [
            {"name": "a.bin", "type": "file", "size": 5},
            {"name": "link", "type": "symlink", "size": None},
            {"name": "notes", "type": "directory", "size": None},
        ],
        "truncated": False,
    }
    assert files.list("notes") == files.list_dir("notes/")  # `list` is the YAML name
    assert files.list_dir("notes")["entries"] == [
        {"name": "day 1", "type": "directory", "size": None}
    ]


def test_read_truncates_and_replaces_bad_bytes(workspace: pathlib.Path) -> None:
    (workspace / "a.bin").write_bytes(b"\xff\x00abc")
    assert files.read("a.bin")["content"] == "\ufffd\x00abc"
    (workspace / "big.txt").write_text("é" * 10)  # 20 bytes
    result = files.read("big.txt", max_bytes=5)
    # 5 bytes hold two whole "é"; the half character at the cut is dropped.
    assert result == {"path": "big.txt", "content": "éé", "size": 20, "truncated": True}
    assert files.read("big.txt", max_bytes=20)["truncated"] is False


def test_symlinks_inside_the_workspace_are_fine(workspace: pathlib.Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "real" / "f.txt").write_text("inside")
    os.symlink("real", workspace / "alias")
    os.symlink("real/f.txt", workspace / "f-link")
    assert files.read("alias/f.txt")["content"] == "inside"
    assert files.read("f-link")["content"] == "inside"
    files.write("alias/g.txt", "via alias")
    assert (workspace / "real" / "g.txt").read_text() == "via alias"


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("../x", PermissionError, "leaves the workspace"),
        ("../outside/secret.txt", PermissionError, "leaves the workspace"),
        ("a/../../x", PermissionError, "leaves the workspace"),
        ("..", PermissionError, "leaves the workspace"),
        ("/etc/passwd", PermissionError, "absolute path"),
        ("//etc/passwd", PermissionError, "absolute path"),
        ("a\x00b", ValueError, "NUL"),
        ("", ValueError, "empty"),
        ("x" * 5000, ValueError, "longer than"),
    ],
)
def test_refuses_paths_outside(
    workspace: pathlib.Path, path: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        files.read(path)
    with pytest.raises(error, match=message):
        files.write(path, "x")
    with pytest.raises(error, match=message):
        files.list_dir(path)
    assert not (workspace.parent / "x").exists()


def test_refuses_symlinks_out_of_the_workspace(workspace: pathlib.Path) -> None:
    outside = workspace.parent / "outside"
    os.symlink(outside / "secret.txt", workspace / "secret-link")
    os.symlink(outside, workspace / "out-dir")
    os.symlink("../outside/new.txt", workspace / "dangling")  # target does not exist yet
    for path in ["secret-link", "out-dir/secret.txt"]:
        with pytest.raises(PermissionError, match="outside the workspace"):
            files.read(path)
    for path in ["secret-link", "out-dir/new.txt", "out-dir/sub/new.txt", "dangling"]:
        with pytest.raises(PermissionError, match="outside the workspace"):
            files.write(path, "pwned")
    with pytest.raises(PermissionError, match="outside the workspace"):
        files.list_dir("out-dir")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "top secret"


def test_symlink_swapped_in_after_the_check_is_not_followed(
    workspace: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate the race: the realpath check sees no link, the open then meets one.
    os.symlink(workspace.parent / "outside" / "secret.txt", workspace / "late")
    os.symlink(workspace.parent / "outside", workspace / "late-dir")
    monkeypatch.setattr(files.os.path, "realpath", os.path.abspath)
    with pytest.raises(PermissionError, match="symbolic link"):
        files.read("late")
    with pytest.raises(PermissionError, match="symbolic link"):
        files.write("late", "pwned")
    with pytest.raises(PermissionError, match="symbolic link"):
        files.write("late-dir/new.txt", "pwned")
    assert (workspace.parent / "outside" / "secret.txt").read_text() == "top secret"
    assert not (workspace.parent / "outside" / "new.txt").exists()


def test_refuses_special_and_hard_linked_files(workspace: pathlib.Path) -> None:
    os.mkfifo(workspace / "fifo")
    with pytest.raises(PermissionError, match="not a regular file"):
        files.read("fifo")  # must not hang waiting for a writer
    with pytest.raises(PermissionError, match="not a regular file"):
        files.write("fifo", "x")
    outside = workspace.parent / "outside" / "secret.txt"
    os.link(outside, workspace / "hard")
    with pytest.raises(PermissionError, match="hard links"):
        files.write("hard", "pwned")
    assert outside.read_text() == "top secret"


def test_wrong_kinds_and_missing_files(workspace: pathlib.Path) -> None:
    files.write("d/f.txt", "x")
    with pytest.raises(FileNotFoundError, match="'missing.txt' does not exist"):
        files.read("missing.txt")
    with pytest.raises(FileNotFoundError):
        files.list_dir("nope")
    with pytest.raises(IsADirectoryError, match="'d' is a directory"):
        files.read("d")
    with pytest.raises(IsADirectoryError):
        files.write("d", "x")
    with pytest.raises(IsADirectoryError):
        files.read(".")
    with pytest.raises(NotADirectoryError):
        files.list_dir("d/f.txt")
    with pytest.raises(NotADirectoryError):
        files.write("d/f.txt/child", "x")


def test_limits_and_argument_types(workspace: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="limit is 1,048,576"):
        files.write("big", "x" * (1024 * 1024 + 1))
    assert not (workspace / "big").exists()
    files.write("ok", "x")
    for bad in [0, -1, 1024 * 1024 + 1, True, 1.5]:
        with pytest.raises(ValueError, match="max_bytes"):
            files.read("ok", max_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content must be a string"):
        files.write("ok", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="append"):
        files.write("ok", "x", append="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path must be a string"):
        files.read(None)  # type: ignore[arg-type]


def test_list_caps_entries(workspace: pathlib.Path) -> None:
    for i in range(files.MAX_ENTRIES + 5):
        (workspace / f"f{i:05d}").touch()
    result = files.list_dir()
    assert len(result["entries"]) == files.MAX_ENTRIES
    assert result["truncated"] is True
    assert result["entries"][0]["name"] == "f00000"


def test_runs_in_sandbox_python(run_tool, workspace: pathlib.Path) -> None:
    wrote = run_tool("files", "write", {"path": "out/a.txt", "content": "hi"}, cwd=workspace)
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.result == {"path": "out/a.txt", "bytes_written": 2}
    read = run_tool("files", "read", {"path": "out/a.txt"}, cwd=workspace)
    assert read.result["content"] == "hi"
    listed = run_tool("files", "list", {"path": "out"}, cwd=workspace)
    assert listed.result["entries"] == [{"name": "a.txt", "type": "file", "size": 2}]
    os.symlink(workspace.parent / "outside", workspace / "escape")
    for arguments in [
        {"path": "../outside/secret.txt"},
        {"path": "/etc/passwd"},
        {"path": "escape/secret.txt"},
    ]:
        refused = run_tool("files", "read", arguments, cwd=workspace)
        assert refused.returncode == 1
        assert refused.stderr.startswith("PermissionError: ")
        assert "top secret" not in refused.stderr


def test_refuses_unencodable_content(workspace: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unpaired surrogates"):
        files.write("s.txt", "a\ud800b")
    assert not (workspace / "s.txt").exists()
