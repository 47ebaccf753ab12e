"""Resources: ``file://``, ``db://`` and ``api://`` hosts declared in resources.d/, read by URI.

:class:`ResourceHosts` resolves a URI string to its host and reads it; every
refusal is a :class:`ResourceError` whose ``code`` is the protocol error code.
Policy is not decided here: the server asks the policy engine before reading.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config.model import ApiResource, Config, DbResource, FileResource
from ..config.yamldoc import Document, read_document
from ..errors import ConfigError, ConfigProblem
from .api import ApiHost
from .content import Content as Content
from .content import Template as Template
from .db import DbHost
from .errors import BadURI as BadURI
from .errors import NotFound as NotFound
from .errors import Refused as Refused
from .errors import ResourceError as ResourceError
from .errors import TooLarge as TooLarge
from .errors import Unavailable as Unavailable
from .errors import UpstreamTimeout as UpstreamTimeout
from .files import FileHost
from .uri import ResourceURI as ResourceURI
from .uri import parse_uri as parse_uri

Host = FileHost | DbHost | ApiHost


class ResourceHosts:
    """Every declared host of one configuration, by ``scheme://name``.

    Building it checks what only the running server knows: where the state
    directory is.  A file host's root may neither hold the state directory nor
    lie inside it (the tools' workspaces live there) nor inside any tool's
    ``writable_paths``: a tool that can write where the root is could swap it
    for a symlink to the engine's secrets.  Raises :class:`ConfigError`.
    """

    def __init__(self, config: Config, state_dir: Path) -> None:
        root = Path(config.root)
        state = state_dir.resolve()
        self.hosts: dict[str, Host] = {}
        problems: list[ConfigProblem] = []
        writable = _tool_writable(config, state)
        for key, resource in config.resources.items():
            if isinstance(resource, FileResource):
                host = FileHost(resource, root)
                problems += _misplaced_root(config, resource, host.root, state, writable)
                self.hosts[key] = host
            elif isinstance(resource, DbResource):
                self.hosts[key] = DbHost(resource, root, state_dir)
            elif isinstance(resource, ApiResource):
                self.hosts[key] = ApiHost(resource)
        if problems:
            raise ConfigError(problems)

    def templates(self) -> list[Template]:
        return [template for host in self.hosts.values() for template in host.templates()]

    def resolve(self, uri: str) -> tuple[ResourceURI, Host]:
        """Parse ``uri`` and find its host; raises BadURI or NotFound."""
        parsed = parse_uri(uri)
        if parsed.scheme not in ("file", "db", "api"):
            raise NotFound(f"unknown scheme {parsed.scheme!r} (known: file, db, api)")
        host = self.hosts.get(parsed.key)
        if host is None:
            raise NotFound(f"no resource host {parsed.key!r}")
        return parsed, host

    async def read(self, uri: str) -> Content:
        parsed, host = self.resolve(uri)
        return await host.read(parsed)


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


def _misplaced_root(
    config: Config, resource: FileResource, resolved: Path, state: Path, writable: list[tuple[Path, str]]
) -> list[ConfigProblem]:
    """Why this file host's root may not be served, located at its ``root`` key (none when fine)."""
    # Both spellings count: the root as written (a tool could re-point a symlink on its way
    # before the next reload) and as it resolves now.
    lexical = Path(os.path.normpath(Path(config.root) / resource.root))
    why = None
    if state == resolved or state.is_relative_to(resolved) or state.is_relative_to(lexical):
        why = f"{resolved} holds the server's state directory ({state}): a file host may not serve it"
    else:
        for place, what in writable:
            if any(candidate == place or candidate.is_relative_to(place) for candidate in (lexical, resolved)):
                why = (f"{resolved} lies inside {what}: a tool could replace the root (with a symlink to the "
                       "engine's secrets); serve a directory no tool can write")
                break
    if why is None:
        return []
    line, column = resource.source.line, 1
    # Only the root key's line is wanted: a file that cannot be re-read keeps the host's line.
    doc = read_document(Path(config.root) / resource.source.file, resource.source.file)
    if isinstance(doc, Document):
        line, column = doc.locate(["root"])
    return [ConfigProblem(resource.source.file, line, column, "root", why)]
