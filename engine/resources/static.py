"""``kind: static``: fixed documents under any scheme, from files or inline in the YAML.

One host per file, at ``<scheme>://<name>``; each of its ``documents`` sits at a
path template under it (empty: the host's own URI, ``test://static-text``;
``{id}/data``: ``test://template/7/data``) and holds exactly one of:

- ``text``: inline text; in a document whose path has placeholders, ``{name}``
  is replaced by that path segment (declared placeholders only, in one pass,
  so a value is never expanded again);
- ``base64``: inline binary content, served as bytes;
- ``file``: a file under the configuration directory (relative, no ``..``),
  opened component by component without following any symlink, read at each
  read (so an edit shows without a reload) and refused past ``max_size``.

``mime_type`` defaults to ``text/plain`` for text, ``application/octet-stream``
for base64 and a guess from the file name for files.  Reads go through the
same policy, listing and audit as every other host; a URI no document's
template matches is ``not_found``.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import attrs
import trio

from ..config.model import Source
from ..config.resource_kinds import ResourceKind, kinds, register
from ..config.units import Bytes
from ..config.yamldoc import Document
from ..errors import ConfigProblem
from .content import Content, Template, as_content
from .errors import NotFound, Refused, TooLarge, Unavailable
from .files import open_beneath
from .host import HostContext
from .templates import _PLACEHOLDER, check_template, host_templates, route_for
from .uri import ResourceURI

_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")


@attrs.frozen
class StaticDocument:
    """One fixed document of a static host, at ``path`` under it."""

    path: str = ""
    description: str = ""
    text: str | None = None
    base64: str | None = None
    file: str | None = None
    mime_type: str | None = None
    params: Mapping[str, Literal["string", "integer", "number"]] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )


@attrs.frozen
class StaticResource:
    """``<scheme>://NAME[/path]``: fixed documents declared in the YAML or kept in files beside it."""

    kind: Literal["static"]
    scheme: str
    name: str
    description: str
    documents: tuple[StaticDocument, ...]
    max_size: Bytes = Bytes(2**20)
    source: Source = Source()


SCHEMA = {
    "required": ["kind", "documents"],
    "properties": {
        "max_size": {"$ref": "common.json#/$defs/size",
                     "description": "Largest document (inline or file). Default: 1MiB."},
        "documents": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "path": {"type": "string", "description": "Path template under the host, e.g. {id}/data. "
                             "Default: empty, the host's own URI."},
                    "description": {"type": "string"},
                    "text": {"type": "string", "description": "Inline text; {placeholders} of path are filled in."},
                    "base64": {"type": "string", "description": "Inline binary content, base64-encoded."},
                    "file": {"type": "string", "minLength": 1,
                             "description": "A file relative to the config directory; symlinks are never followed."},
                    "mime_type": {"type": "string", "pattern": "^[a-z]+/[A-Za-z0-9.+_-]+$",
                                  "description": "Default: text/plain (text), application/octet-stream (base64), "
                                  "guessed from the name (file)."},
                    "params": {"$ref": "common.json#/$defs/param_types"},
                },
            },
        },
    },
}


def check(resource: StaticResource, doc: Document, root: Path) -> list[ConfigProblem]:
    problems = []
    fixed = {kind.scheme: kind.name for kind in kinds().values() if kind.scheme is not None}
    if resource.scheme in fixed:
        problems.append(doc.problem(["scheme"], f"scheme {resource.scheme!r} belongs to the {fixed[resource.scheme]} "
                                    "kind; a static host needs a scheme of its own (e.g. docs, test)"))
    limit = int(resource.max_size)
    seen: dict[str, int] = {}
    for index, document in enumerate(resource.documents):
        where: list[str | int] = ["documents", index]
        given = [key for key in ("text", "base64", "file") if getattr(document, key) is not None]
        if len(given) != 1:
            problems.append(doc.problem(where, "declare exactly one of 'text', 'base64' and 'file'"
                                        + (f" (found {', '.join(given)})" if given else "")))
        problems += _check_path(doc, [*where, "path"], document.path)
        key = document.path.strip("/")
        if key in seen:
            problems.append(doc.problem([*where, "path"], f"path {document.path!r} is already served by "
                                        f"documents[{seen[key]}]"))
        seen.setdefault(key, index)
        used = set(_PLACEHOLDER.findall(document.text or "")) if _PLACEHOLDER.search(document.path) else set()
        problems += check_template(doc, where, document.path, document.params, used)
        size = None
        if document.text is not None:
            size = len(document.text.encode("utf-8"))
        elif document.base64 is not None:
            try:
                size = len(base64.b64decode(document.base64, validate=True))
            except (binascii.Error, ValueError):
                problems.append(doc.problem([*where, "base64"], "not valid base64"))
        elif document.file is not None:
            why, size = _check_file(root, document.file)
            if why:
                problems.append(doc.problem([*where, "file"], why))
        if size is not None and size > limit:
            field = given[0] if given else "path"
            problems.append(doc.problem([*where, field], f"{size} bytes, more than max_size ({limit} bytes)"))
    return problems


def _check_path(doc: Document, where: list[str | int], path: str) -> list[ConfigProblem]:
    stripped = path.strip("/")
    for segment in stripped.split("/") if stripped else []:
        if _PLACEHOLDER.fullmatch(segment) or (_LITERAL_SEGMENT.fullmatch(segment) and segment not in (".", "..")):
            continue
        if "{" in segment or "}" in segment:
            return [doc.problem(where, f"{segment!r}: a placeholder must be a whole segment, e.g. {{id}}")]
        return [doc.problem(where, f"{segment!r} is not a plain path segment (letters, digits, . _ ~ - and the "
                            "like; no '%', no '..')")]
    return []


def _check_file(root: Path, name: str) -> tuple[str | None, int | None]:
    """Why ``name`` cannot be served (or None), and its size."""
    parts = tuple(name.split("/"))
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return f"{name!r} must be a plain path relative to the config directory (no '..', not absolute)", None
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_beneath(directory, parts)
    except (NotFound, Refused) as exc:
        return f"{name}: {exc.message.split(': ', 1)[-1]}", None
    finally:
        os.close(directory)
    try:
        return None, os.fstat(fd).st_size
    finally:
        os.close(fd)


def build(resource: StaticResource, context: HostContext) -> StaticHost:
    return StaticHost(resource, context.config_root)


class StaticHost:
    def __init__(self, config: StaticResource, config_root: Path) -> None:
        self.config = config
        self.key = f"{config.scheme}://{config.name}"
        self.config_root = config_root
        # Decoded once; the checks made sure each one decodes.
        self._binary = {
            index: base64.b64decode(document.base64, validate=True)
            for index, document in enumerate(config.documents) if document.base64 is not None
        }

    def templates(self) -> list[Template]:
        return host_templates(self.key, self.config.documents, self.config.description)

    async def read(self, uri: ResourceURI) -> Content:
        document, values = route_for(self.key, self.config.documents, uri.segments)
        index = self.config.documents.index(document)
        if document.text is not None:
            text = document.text
            if values:
                text = _PLACEHOLDER.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], text)
            return Content(str(uri), document.mime_type or "text/plain", text, False)
        if index in self._binary:
            return Content(str(uri), document.mime_type or "application/octet-stream", self._binary[index], False)
        assert document.file is not None  # exactly one of the three, checked at load
        raw = await trio.to_thread.run_sync(self._read_file, document.file)
        return as_content(str(uri), raw, False, document.mime_type or mimetypes.guess_type(document.file)[0])

    def _read_file(self, name: str) -> bytes:
        limit = int(self.config.max_size)
        try:
            directory = os.open(self.config_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise Unavailable(f"{self.key}: the configuration directory cannot be opened: {exc.strerror}") from None
        try:
            fd = open_beneath(directory, tuple(name.split("/")))
        finally:
            os.close(directory)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            raise TooLarge(f"{self.key}: {name} is larger than this host's max_size ({limit} bytes)")
        return raw


KIND = register(ResourceKind("static", StaticResource, SCHEMA, check, build, scheme=None))
