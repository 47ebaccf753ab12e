"""Read one YAML file into data while keeping every node's position.

PyYAML's ``safe_load`` throws marks away and silently keeps the last of two
duplicate keys (pyyaml#165).  Composing the node tree first lets us refuse
duplicates and later point an error at the exact key or value it is about.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from ..errors import ConfigProblem

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


def read_document(path: Path, display: str) -> Document | list[ConfigProblem]:
    """Parse ``path``; on failure return the problems instead of raising."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [ConfigProblem(display, 0, 0, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    except OSError as exc:
        return [ConfigProblem(display, 0, 0, "", f"cannot read: {exc.strerror}")]
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return [ConfigProblem(display, 0, 0, "", "file is empty: expected one YAML mapping")]
        duplicates = list(_duplicate_keys(root, display))
        if duplicates:
            return duplicates
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        if "expected a single document" in message:
            message = "more than one YAML document: a file holds exactly one"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return [ConfigProblem(display, line, column, "", f"YAML syntax error: {message}")]
    except yaml.YAMLError as exc:
        return [ConfigProblem(display, 0, 0, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    return Document(display, data, root)


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
