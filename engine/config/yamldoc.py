"""Read one YAML file into data while keeping every node's position.

PyYAML's ``safe_load`` throws marks away and silently keeps the last of two
duplicate keys (pyyaml#165).  Composing the node tree first lets us refuse
duplicates and later point an error at the exact key or value it is about.

Whoever can write a configuration file controls what this module reads inside
the server, so reading is bounded before each costly step (see
:mod:`.bounds`): the size on the open descriptor before reading, then the
parser's events (aliases, tags, value count, depth) before composing.  Errors
never quote the file's text.

Parsing is most of the time reading a file takes, and every reload, ``check`` and
server start reads the same files again: a parse that succeeded is remembered by the
digest of the bytes read (bounded in entries and bytes). The file is still opened,
checked and read each time; a remembered parse gives a fresh copy of its data (only
the node tree, read for positions, is shared).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from ..errors import ConfigProblem
from .bounds import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, format_bytes

PathSegment = str | int
# libyaml's parser keeps node marks too, at a tenth of the pure-Python parser's cost.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@attrs.frozen
class Document:
    """A parsed file: its data, its node tree, and its name as shown in errors."""

    file: str
    data: Any
    root: yaml.Node

    def locate(self, path: Sequence[PathSegment], *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the node at ``path``.

        With ``key=True`` the last segment names a mapping key and the key's own
        position is returned (an unknown key is reported where it is written).
        When the path leaves the tree, the deepest node reached is used.
        """
        node = self.root
        for index, segment in enumerate(path):
            child = _child(node, segment, want_key=key and index == len(path) - 1)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1, node.start_mark.column + 1

    def problem(self, path: Sequence[PathSegment], message: str, *, key: bool = False) -> ConfigProblem:
        line, column = self.locate(path, key=key)
        return ConfigProblem(self.file, line, column, format_path(path), message)


def format_path(path: Sequence[PathSegment]) -> str:
    """``["model", "rules", 2, "match"]`` -> ``model.rules[2].match``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else str(segment)
    return text


def read_document(
    path: Path, display: str, *, follow_symlinks: bool = True, inside: Sequence[Path] = ()
) -> Document | list[ConfigProblem]:
    """Parse ``path``; on failure return the problems instead of raising.

    The file is opened once and checked on its descriptor (a regular file, at
    most ``MAX_FILE_BYTES``) before it is read; with ``follow_symlinks=False`` a
    symbolic link in its last component is refused unread; with ``inside``,
    the file actually opened (as the kernel names its descriptor) must lie in
    one of those directories, so a link swapped in after the caller looked is
    refused unread too.  Its events are
    then counted before anything is composed: aliases, anchors and unknown
    tags are refused, and so is a file past ``MAX_NODES`` values or
    ``MAX_DEPTH`` levels.  No problem ever quotes the file's content: an
    unparseable file may not be configuration at all (a link to a secret), so
    errors say where and what, never which text.
    """
    raw = _read_bounded(path, display, follow_symlinks=follow_symlinks, inside=inside)
    if isinstance(raw, list):
        return raw
    digest = hashlib.blake2b(raw, digest_size=32).digest()
    with _parsed_lock:
        known = _parsed.get(digest)
    if known is not None:
        return Document(display, _fresh(known[1]), known[0])
    parsed = _parse(raw, display)
    if isinstance(parsed, Document) and len(raw) <= _PARSED_FILE_BYTES:
        _remember(digest, len(raw), parsed.root, _fresh(parsed.data))
    return parsed


# Remembered parses: a configuration is tens of files of a few KiB.
_PARSED_FILE_BYTES = 64 * 1024
_PARSED_TOTAL_BYTES = 4 * 1024 * 1024
_parsed: dict[bytes, tuple[yaml.Node, Any, int]] = {}
_parsed_bytes = 0
_parsed_lock = threading.Lock()  # configurations also load in worker threads (reloads)


def _remember(digest: bytes, size: int, root: yaml.Node, data: Any) -> None:
    global _parsed_bytes
    with _parsed_lock:
        while _parsed and _parsed_bytes + size > _PARSED_TOTAL_BYTES:
            _parsed_bytes -= _parsed.pop(next(iter(_parsed)))[2]  # the oldest
        if digest not in _parsed:
            _parsed[digest] = (root, data, size)
            _parsed_bytes += size


def _fresh(data: Any) -> Any:
    """A copy of parsed data sharing nothing mutable (what the safe loader builds: mappings,
    lists and immutable scalars; sets and binary are refused by their tags)."""
    if type(data) is dict:
        return {key: _fresh(value) for key, value in data.items()}
    if type(data) is list:
        return [_fresh(value) for value in data]
    return data


def _parse(raw: bytes, display: str) -> Document | list[ConfigProblem]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [ConfigProblem(display, 0, 0, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    try:
        refused = _bounds_problem(text, display)
        if refused is not None:
            return [refused]
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return [ConfigProblem(display, 0, 0, "", "file is empty: expected one YAML mapping")]
            duplicates = list(_duplicate_keys(root, display))
            if duplicates:
                return duplicates
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(_scrub(part) for part in (exc.context, exc.problem) if part)
        if "expected a single document" in message:
            message = "more than one YAML document: a file holds exactly one"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return [ConfigProblem(display, line, column, "", f"YAML syntax error: {message}")]
    except yaml.YAMLError as exc:
        # Unmarked errors (e.g. a reader error) carry no position; their text may quote the file.
        return [ConfigProblem(display, 0, 0, "", f"YAML error: {type(exc).__name__}")]
    return Document(display, data, root)


def _read_bounded(
    path: Path, display: str, *, follow_symlinks: bool, inside: Sequence[Path]
) -> bytes | list[ConfigProblem]:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block the reload
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            return [ConfigProblem(display, 0, 0, "", "is a symbolic link here: refused, not read")]
        return [ConfigProblem(display, 0, 0, "", f"cannot read: {exc.strerror}")]
    if inside and not _opened_inside(fd, inside):
        os.close(fd)
        return [ConfigProblem(
            display, 0, 0, "", "is a symbolic link leading outside the configuration directory: refused, not read"
        )]
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        # Checked on the bare descriptor: a file object cannot even be made for a directory.
        os.close(fd)
        return [ConfigProblem(display, 0, 0, "", "not a regular file: refused, not read")]
    with os.fdopen(fd, "rb") as stream:
        too_big = ConfigProblem(
            display, 0, 0, "",
            f"file is {format_bytes(max(info.st_size, MAX_FILE_BYTES + 1))}; a configuration file may be at most "
            f"{format_bytes(MAX_FILE_BYTES)}",
        )
        if info.st_size > MAX_FILE_BYTES:
            return [too_big]
        try:
            raw = stream.read(MAX_FILE_BYTES + 1)  # it may have grown since fstat
        except OSError as exc:
            return [ConfigProblem(display, 0, 0, "", f"cannot read: {exc.strerror}")]
    return [too_big] if len(raw) > MAX_FILE_BYTES else raw


def _opened_inside(fd: int, inside: Sequence[Path]) -> bool:
    """Whether the file open on ``fd`` lies in one of ``inside`` (checked on what was opened, not on a name)."""
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True  # no /proc: the caller's check of the path before opening is all there is
    try:
        return any(opened.is_relative_to(directory.resolve(strict=True)) for directory in inside)
    except (OSError, RuntimeError):
        return False


_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map"))


def _bounds_problem(text: str, display: str) -> ConfigProblem | None:
    """The first event that breaks a bound, before any node is composed.

    libyaml's parser is iterative, so walking its events is safe at any depth
    and costs a fraction of composing; its composer recurses in C and expands
    nothing, but an alias lets a few hundred bytes stand for millions of values
    downstream (JSON, tool_list), so aliases are refused outright.
    """
    loader = _Loader(text)
    nodes = depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                return _at(display, event, "YAML anchors and aliases are not allowed in configuration files: "
                           "write each value out")
            if not isinstance(event, yaml.ScalarEvent | yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                    depth -= 1
                continue
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in _PLAIN_TAGS:
                return _at(display, event, "explicit YAML tags other than !!str, !!int, !!float, !!bool, !!null, "
                           "!!seq and !!map are not allowed")
            nodes += 1
            if nodes > MAX_NODES:
                return _at(display, event, f"more than {MAX_NODES} YAML values in one file: refused")
            if not isinstance(event, yaml.ScalarEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return _at(display, event, f"lists and mappings nested more than {MAX_DEPTH} deep: refused")
    finally:
        loader.dispose()
    return None


def _at(display: str, event: yaml.Event, message: str) -> ConfigProblem:
    mark = event.start_mark
    return ConfigProblem(display, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0, "", message)


# Quoted text in a YAML error is the file's own (a tag, a character); token names such
# as '<block end>' and single punctuation such as ']' say what was expected and stay.
_QUOTED = re.compile(r"'([^']*)'")


def _scrub(text: str) -> str:
    def keep(match: re.Match[str]) -> str:
        inner = match.group(1)
        if re.fullmatch(r"<[a-z ]+>", inner) or re.fullmatch(r"[^\w\s]{1,3}", inner):
            return match.group(0)
        return "(text not shown)"

    return _QUOTED.sub(keep, text)


def _duplicate_keys(node: yaml.Node, display: str) -> Iterator[ConfigProblem]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                yield ConfigProblem(
                    display,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    "",
                    f"duplicate key {key!r} (first set on line {first})",
                )
            else:
                seen[key] = key_node
            yield from _duplicate_keys(value_node, display)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, display)


def _child(node: yaml.Node, segment: PathSegment, *, want_key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(segment):
                return key_node if want_key else value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
        if 0 <= segment < len(node.value):
            return node.value[segment]
    return None
