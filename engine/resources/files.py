"""``file://NAME/path``: files under a root directory, read-only, within allowed globs.

The root itself is opened component by component from ``/`` with
``O_NOFOLLOW``, and the directory reached must be the very one found when the
configuration was loaded (same device and inode): a root swapped for a symlink
or for another directory after the load is refused (``forbidden``), never
followed.  Each path component under the root is then opened relative to its
parent with ``O_NOFOLLOW``: symlinks are never followed (one inside the root
that points outside it is refused, and so is any other), and a component
swapped for a symlink after a check cannot redirect the read.  Only regular
files are served.

Where a root may lie is checked when the host is built (at start and at each
reload, when the state directory is known): never where a tool can write —
not holding or inside the state directory (the tools' workspaces live there),
not inside any tool's ``writable_paths``, as written or as resolved.  A tool
that can write where the root is could swap it for a symlink to the engine's
secrets.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import trio

from ..config.model import Config, FileResource
from ..config.resource_kinds import ResourceKind, register
from ..config.yamldoc import Document, read_document
from ..errors import ConfigError, ConfigProblem
from ..globs import glob_regex
from .content import Content, Template, as_content
from .errors import NotFound, Refused, TooLarge, Unavailable
from .host import HostContext
from .uri import ResourceURI

SCHEMA = {
    "properties": {
        "root": {"type": "string", "minLength": 1,
                 "description": "Directory served, relative to the config directory or absolute."},
        "globs": {"$ref": "common.json#/$defs/string_list",
                  "description": "Paths (relative to root) that may be read. Default: [\"**\"]."},
        "max_size": {"$ref": "common.json#/$defs/size", "description": "Largest content served. Default: 1MiB."},
        "on_oversize": {"enum": ["truncate", "refuse"],
                        "description": "What happens past max_size. Default: truncate."},
    },
    "required": ["root"],
}


def check(resource: FileResource, doc: Document, root: Path) -> list[ConfigProblem]:
    problems = []
    for index, glob in enumerate(resource.globs):
        if glob.startswith("/") or ".." in glob.split("/"):
            problems.append(doc.problem(["globs", index], f"{glob!r} must be relative to root, without '..'"))
    return problems


def build(resource: FileResource, context: HostContext) -> FileHost:
    """The host, or a ConfigError when its root lies where a tool can write."""
    host = FileHost(resource, context.config_root)
    problems = _misplaced_root(context.config, resource, host.root, context.state_dir.resolve())
    if problems:
        raise ConfigError(problems)
    return host


class FileHost:
    def __init__(self, config: FileResource, config_root: Path) -> None:
        self.config = config
        self.root = (config_root / config.root).resolve()
        self._globs = [glob_regex(glob) for glob in config.globs]
        # The identity of the root at load: a read reaching any other directory is refused.
        try:
            info = os.stat(self.root)
        except OSError:
            self._identity: tuple[int, int] | None = None  # reads say the root is unavailable
        else:
            self._identity = (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None

    def templates(self) -> list[Template]:
        found = []
        for glob in self.config.globs:
            prefix = re.split(r"[*?\[]", glob, maxsplit=1)[0].rstrip("/")
            base = f"file://{self.config.name}/" + (f"{prefix}/" if prefix else "")
            found.append(Template(base + "{path}", self.config.description, f"file://{self.config.name}"))
        return found

    async def read(self, uri: ResourceURI) -> Content:
        path = uri.path
        if not path:
            raise NotFound(f"{uri}: name a file under the host")
        if not any(pattern.fullmatch(path) for pattern in self._globs):
            raise Refused(f"{uri}: the path is outside the globs this host serves")
        raw, truncated = await trio.to_thread.run_sync(self._read, uri.segments)
        return as_content(str(uri), raw, truncated)

    def _read(self, segments: tuple[str, ...]) -> tuple[bytes, bool]:
        limit = int(self.config.max_size)
        root = self._open_root()
        try:
            fd = open_beneath(root, segments)
        finally:
            os.close(root)
        try:
            info = os.fstat(fd)
            if info.st_size > limit and self.config.on_oversize == "refuse":
                raise TooLarge(f"{'/'.join(segments)}: {info.st_size} bytes, more than this host's limit of {limit}")
            with os.fdopen(os.dup(fd), "rb") as handle:
                raw = handle.read(limit + 1)
            return raw[:limit], len(raw) > limit
        finally:
            os.close(fd)

    def _open_root(self) -> int:
        """A descriptor on the root as loaded, reached without following any symlink."""
        if self._identity is None:
            raise Unavailable(f"file://{self.config.name}: the root {self.root} was not a directory when loaded")
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open("/", flags)
        try:
            for part in self.root.parts[1:]:
                child = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = child
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            where = f"file://{self.config.name}: the root {self.root}"
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused(f"{where} is now a symlink; not followed") from None
            raise Unavailable(f"{where} cannot be opened: {exc.strerror}") from None
        if (info.st_dev, info.st_ino) != self._identity:
            os.close(fd)
            raise Refused(f"file://{self.config.name}: the root {self.root} was replaced since the configuration "
                          "was loaded")
        return fd


def open_beneath(directory: int, segments: tuple[str, ...]) -> int:
    """A descriptor on the regular file at ``segments`` under the open ``directory``, no symlink followed.

    Raises Refused (a symlink, not a regular file, no permission) or NotFound.
    The caller closes the descriptor; ``directory`` stays open.
    """
    fd = os.dup(directory)
    try:
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                child = os.open(segment, flags, dir_fd=fd)
            except OSError as exc:
                raise _translate(exc, "/".join(segments)) from None
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused(f"{'/'.join(segments)}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _translate(exc: OSError, path: str) -> Exception:
    if exc.errno == errno.ELOOP:
        return Refused(f"{path}: symlinks are not followed")
    if exc.errno == errno.ENOTDIR:
        # O_DIRECTORY|O_NOFOLLOW on a symlink to a directory fails with ENOTDIR, not ELOOP.
        return Refused(f"{path}: a part of the path is a symlink (not followed) or not a directory")
    if exc.errno == errno.ENOENT:
        return NotFound(f"{path}: no such file")
    if exc.errno == errno.EACCES:
        return Refused(f"{path}: permission denied")
    return NotFound(f"{path}: {exc.strerror}")


def _tool_writable(config: Config, state: Path) -> list[tuple[Path, str]]:
    """Where tools may write, each with the reason shown in an error."""
    places = [(state, f"the server's state directory ({state}), which holds the tools' workspaces")]
    for tool in config.tools.values():
        for path in tool.sandbox.writable_paths:
            places.append((Path(os.path.normpath(path)), f"tool {tool.name}'s writable path {path}"))
            resolved = Path(path).resolve()
            if resolved != Path(os.path.normpath(path)):
                places.append((resolved, f"tool {tool.name}'s writable path {path} (resolved: {resolved})"))
    return places


def _misplaced_root(config: Config, resource: FileResource, resolved: Path, state: Path) -> list[ConfigProblem]:
    """Why this file host's root may not be served, located at its ``root`` key (none when fine)."""
    # Both spellings count: the root as written (a tool could re-point a symlink on its way
    # before the next reload) and as it resolves now.
    lexical = Path(os.path.normpath(Path(config.root) / resource.root))
    why = None
    if state == resolved or state.is_relative_to(resolved) or state.is_relative_to(lexical):
        why = f"{resolved} holds the server's state directory ({state}): a file host may not serve it"
    else:
        for place, what in _tool_writable(config, state):
            if any(candidate == place or candidate.is_relative_to(place) for candidate in (lexical, resolved)):
                why = (f"{resolved} lies inside {what}: a tool could replace the root (with a symlink to the "
                       "engine's secrets); serve a directory no tool can write")
                break
    if why is None:
        return []
    line, column = resource.source.line, 1
    # Only the root key's line is wanted: a file that cannot be re-read keeps the host's line.
    try:
        doc = read_document(Path(config.root) / resource.source.file, resource.source.file) if (
            resource.source.file) else None
    except OSError:
        doc = None
    if isinstance(doc, Document):
        line, column = doc.locate(["root"])
    return [ConfigProblem(resource.source.file, line, column, "root", why)]


KIND = register(ResourceKind("file", FileResource, SCHEMA, check, build, scheme="file"))
