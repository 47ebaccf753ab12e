"""Resources: ``file://``, ``db://`` and ``api://`` hosts declared in resources.d/, read by URI.

:class:`ResourceHosts` resolves a URI string to its host and reads it; every
refusal is a :class:`ResourceError` whose ``code`` is the protocol error code.
Policy is not decided here: the server asks the policy engine before reading.
"""

from __future__ import annotations

from pathlib import Path

from ..config.model import ApiResource, Config, DbResource, FileResource
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
    """Every declared host of one configuration, by ``scheme://name``."""

    def __init__(self, config: Config, state_dir: Path) -> None:
        root = Path(config.root)
        state = state_dir.resolve()
        self.hosts: dict[str, Host] = {}
        for key, resource in config.resources.items():
            if isinstance(resource, FileResource):
                host = FileHost(resource, root)
                # Reads run in the engine, not in a sandbox: never let one reach the engine's own secrets.
                if state == host.root or state.is_relative_to(host.root):
                    raise ConfigError([ConfigProblem(
                        resource.source.file, resource.source.line, 1, "root",
                        f"{host.root} holds the server's state directory ({state}): a file host may not serve it",
                    )])
                self.hosts[key] = host
            elif isinstance(resource, DbResource):
                self.hosts[key] = DbHost(resource, root, state_dir)
            elif isinstance(resource, ApiResource):
                self.hosts[key] = ApiHost(resource)

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
