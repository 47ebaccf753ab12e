"""Read, write and list files inside the workspace (the current directory).

The sandbox starts the tool with the workspace as its working directory; every path
given here is relative to it and must stay inside it.

- ``read(path, max_bytes=65536)`` -> ``{"path", "content", "size", "truncated"}``:
  the file's first ``max_bytes`` bytes (1 to 1 MiB) decoded as UTF-8, invalid bytes
  replaced by U+FFFD; ``size`` is the whole file's size in bytes and ``truncated``
  says whether ``content`` stops short of it. Binary files are not refused, they just
  read as replacement characters.
- ``write(path, content, append=False)`` -> ``{"path", "bytes_written"}``: writes
  ``content`` as UTF-8 (at most 1 MiB), replacing the file or appending to it; missing
  parent directories are created inside the workspace.
- ``list_dir(path=".")`` -> ``{"path", "entries": [{"name", "type", "size"}], "truncated"}``:
  the entries of a directory sorted by name, at most 1000; ``type`` is ``file``,
  ``directory``, ``symlink`` or ``other``; ``size`` is the byte size of files and null
  for everything else. ``list`` is the same function under the name tool YAML uses
  (``sconnect_tools.files:list``); this module never calls the builtin ``list``.

Containment: a path is refused with ``PermissionError`` if it is absolute, leaves the
workspace through ``..``, or resolves outside it through a symbolic link; a NUL byte or
an empty path is a ``ValueError``. After that check every component is opened relative
to its parent directory with ``O_NOFOLLOW``, so a symlink swapped in between the check
and the open fails with an error instead of being followed. Symlinks that stay inside
the workspace are fine. Only regular files are read or written (never FIFOs or
devices), and a file with more than one hard link is not written, since the other link
might live outside.

Error handling: missing files raise ``FileNotFoundError``, wrong kinds (a directory
where a file is expected, or the reverse) raise ``IsADirectoryError`` /
``NotADirectoryError``, size limits and bad arguments raise ``ValueError``; messages
name the path as the caller gave it, never the host's absolute path.
"""

from __future__ import annotations

import builtins
import codecs
import contextlib
import errno
import os
import stat
from collections.abc import Iterator

# `list` is left out on purpose: a star import would shadow the builtin.
__all__ = ["read", "write", "list_dir"]

MAX_READ_BYTES = 1024 * 1024
MAX_WRITE_BYTES = 1024 * 1024
MAX_ENTRIES = 1000
MAX_PATH_CHARS = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def read(path: str, max_bytes: int = 65536) -> dict[str, object]:
    """Return up to ``max_bytes`` of the workspace file ``path`` as text."""
    if type(max_bytes) is not int or not 1 <= max_bytes <= MAX_READ_BYTES:
        raise ValueError(f"max_bytes must be a whole number from 1 to {MAX_READ_BYTES}")
    shown, parts = _resolve(path)
    if not parts:
        raise IsADirectoryError(f"{shown!r} is the workspace directory; use list to see it")
    with _errors(shown), _parent(parts, create=False) as parent:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(
            parts[-1],
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=parent,
        )
        try:
            info = os.fstat(fd)
            _require_regular(info, shown)
            chunks: builtins.list[bytes] = []
            remaining = max_bytes + 1  # one byte more tells us whether we truncated
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
    data = b"".join(chunks)
    truncated = len(data) > max_bytes
    data = data[:max_bytes]
    # final=False when truncated: a multi-byte character cut at the limit is dropped
    # rather than shown as a replacement character.
    content = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not truncated)
    return {
        "path": shown,
        "content": content,
        "size": max(info.st_size, len(data)),
        "truncated": truncated,
    }


def write(path: str, content: str, append: bool = False) -> dict[str, object]:
    """Write (or append) ``content`` to the workspace file ``path``."""
    if not isinstance(content, str):
        raise ValueError("content must be a string")
    if not isinstance(append, bool):
        raise ValueError("append must be true or false")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "content contains unpaired surrogates and cannot be written as UTF-8"
        ) from None
    if len(data) > MAX_WRITE_BYTES:
        raise ValueError(
            f"content is {len(data):,} bytes as UTF-8; the limit is {MAX_WRITE_BYTES:,}"
        )
    shown, parts = _resolve(path)
    if not parts:
        raise IsADirectoryError(f"{shown!r} is the workspace directory, not a file")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if append:
        flags |= os.O_APPEND
    with _errors(shown), _parent(parts, create=True) as parent:
        # No O_TRUNC here: the file is checked first and truncated only if it passes.
        fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
        try:
            info = os.fstat(fd)
            _require_regular(info, shown)
            if info.st_nlink > 1:
                raise PermissionError(
                    f"{shown!r} has other hard links, which may lie outside the workspace; "
                    "refusing to write it"
                )
            if not append:
                os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
    return {"path": shown, "bytes_written": len(data)}


def list_dir(path: str = ".") -> dict[str, object]:
    """List the workspace directory ``path`` (default: the workspace itself)."""
    shown, parts = _resolve(path)
    entries: builtins.list[dict[str, object]] = []
    with _errors(shown), _directory(parts) as fd, os.scandir(fd) as scan:
        for entry in scan:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                kind, size = "file", info.st_size
            elif stat.S_ISDIR(info.st_mode):
                kind, size = "directory", None
            elif stat.S_ISLNK(info.st_mode):
                kind, size = "symlink", None
            else:
                kind, size = "other", None
            entries.append({"name": entry.name, "type": kind, "size": size})
    entries.sort(key=lambda item: str(item["name"]))
    return {
        "path": shown,
        "entries": entries[:MAX_ENTRIES],
        "truncated": len(entries) > MAX_ENTRIES,
    }


# Tool YAML names the function `list`; keep it an alias so that code in this module
# (which never calls the builtin) and importers who prefer `list_dir` both work.
list = list_dir  # noqa: A001


def _resolve(path: object) -> tuple[str, tuple[str, ...]]:
    """Check ``path`` and return (normalised relative path, components after symlinks)."""
    if not isinstance(path, str):
        raise ValueError("path must be a string relative to the workspace, e.g. 'notes.txt'")
    if "\x00" in path:
        raise ValueError("path must not contain NUL bytes")
    if not path:
        raise ValueError("path is empty; use '.' for the workspace itself")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"path is longer than {MAX_PATH_CHARS} characters")
    if os.path.isabs(path):
        raise PermissionError(
            f"absolute path {path!r} is not allowed; give a path relative to the "
            "workspace, e.g. 'notes/todo.txt'"
        )
    shown = os.path.normpath(path)
    if shown == os.pardir or shown.startswith(os.pardir + os.sep):
        raise PermissionError(f"path {path!r} leaves the workspace")
    root = os.getcwd()
    real = os.path.realpath(os.path.join(root, shown))
    if os.path.commonpath([root, real]) != root:
        raise PermissionError(
            f"path {path!r} resolves outside the workspace through a symbolic link"
        )
    relative = os.path.relpath(real, root)
    parts = () if relative == os.curdir else tuple(relative.split(os.sep))
    return shown, parts


@contextlib.contextmanager
def _parent(parts: tuple[str, ...], create: bool) -> Iterator[int]:
    """Yield an fd of the directory holding ``parts[-1]``, walked without symlinks."""
    with _directory(parts[:-1], create=create) as fd:
        yield fd


@contextlib.contextmanager
def _directory(parts: tuple[str, ...], create: bool = False) -> Iterator[int]:
    fd = os.open(os.curdir, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR, not ELOOP;
                # tell the two apart so a swapped-in link is reported as what it is.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _require_regular(info: os.stat_result, shown: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{shown!r} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise PermissionError(f"{shown!r} is not a regular file")


@contextlib.contextmanager
def _errors(shown: str) -> Iterator[None]:
    """Turn OS errors into messages that name the caller's path, not the host's."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise  # raised here with a message that already names the path
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"{shown!r} does not exist in the workspace") from None
        if isinstance(exc, IsADirectoryError):
            raise IsADirectoryError(f"{shown!r} is a directory, not a file") from None
        if isinstance(exc, NotADirectoryError):
            raise NotADirectoryError(
                f"{shown!r} is not a directory, or passes through a file"
            ) from None
        if isinstance(exc, PermissionError):
            raise PermissionError(f"{shown!r}: permission denied") from None
        if exc.errno == errno.ELOOP:
            # The realpath check passed, so a symlink appeared after it: refuse.
            raise PermissionError(
                f"{shown!r} changed into a symbolic link while being opened"
            ) from None
        if exc.errno == errno.ENXIO:
            raise PermissionError(f"{shown!r} is not a regular file") from None
        raise OSError(exc.errno, f"{shown!r}: {exc.strerror}") from None
