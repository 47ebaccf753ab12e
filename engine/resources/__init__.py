"""Resources: hosts declared in resources.d/ (``file://``, ``db://``, ``api://``, static), read by URI.

:class:`ResourceHosts` resolves a URI string to its host and reads it; every
refusal is a :class:`ResourceError` whose ``code`` is the protocol error code.
Policy is not decided here: the server asks the policy engine before reading.

Each host kind is one module that registers itself
(:mod:`engine.config.resource_kinds`): its config class, schema keys, checks
and runtime.  Importing this package imports the built-in kinds below; a new
kind is one more module and one more import here.
"""

from __future__ import annotations

from pathlib import Path

from ..config.model import Config
from ..config.resource_kinds import kind_of
from ..errors import ConfigError, ConfigProblem
from ..memory import resource as _memory  # noqa: F401  (registers the memory kind)
from . import api as api
from . import db as db
from . import files as files
from . import static as static
from .content import Content as Content
from .content import Template as Template
from .errors import BadURI as BadURI
from .errors import NotFound as NotFound
from .errors import Refused as Refused
from .errors import ResourceError as ResourceError
from .errors import TooLarge as TooLarge
from .errors import Unavailable as Unavailable
from .errors import UpstreamTimeout as UpstreamTimeout
from .host import Host as Host
from .host import HostContext as HostContext
from .host import Reader as Reader
from .uri import ResourceURI as ResourceURI
from .uri import parse_uri as parse_uri


class ResourceHosts:
    """Every declared host of one configuration, by ``scheme://name``.

    Building it runs each kind's host factory with what only the running
    server knows (the state directory): a file host refuses a root where a
    tool can write.  Raises :class:`ConfigError` with every such problem.
    """

    def __init__(self, config: Config, state_dir: Path) -> None:
        context = HostContext(config, state_dir)
        self.hosts: dict[str, Host] = {}
        problems: list[ConfigProblem] = []
        for key, resource in config.resources.items():
            try:
                self.hosts[key] = kind_of(resource).host(resource, context)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        self.schemes = frozenset(key.split("://", 1)[0] for key in self.hosts)

    def templates(self) -> list[Template]:
        return [template for host in self.hosts.values() for template in host.templates()]

    def resolve(self, uri: str) -> tuple[ResourceURI, Host]:
        """Parse ``uri`` and find its host; raises BadURI or NotFound."""
        parsed = parse_uri(uri)
        if parsed.scheme not in self.schemes:
            known = ", ".join(sorted(self.schemes)) or "none"
            raise NotFound(f"unknown scheme {parsed.scheme!r} (known: {known})")
        host = self.hosts.get(parsed.key)
        if host is None:
            raise NotFound(f"no resource host {parsed.key!r}")
        return parsed, host

    async def read(self, uri: str, reader: Reader | None = None) -> Content:
        """Read ``uri``; a host that serves each reader their own content (``read_as``) needs ``reader``."""
        parsed, host = self.resolve(uri)
        read_as = getattr(host, "read_as", None)
        if read_as is not None:
            if reader is None:
                raise Refused(f"{parsed.key} is read only on behalf of someone")
            content: Content = await read_as(parsed, reader)
            return content
        return await host.read(parsed)
