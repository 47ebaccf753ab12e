"""What every resource host is to the engine, and what it is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import attrs

from ..config.model import Config
from .content import Content, Template
from .uri import ResourceURI


@attrs.frozen
class HostContext:
    """What a kind's host factory may use: the whole configuration and the server's state directory."""

    config: Config
    state_dir: Path

    @property
    def config_root(self) -> Path:
        return Path(self.config.root)


@attrs.frozen
class Reader:
    """On whose behalf a read runs, for hosts whose content depends on it (``memory://``).

    ``agent`` is None for a client reading directly; ``store`` is the state store.
    """

    subject: str
    agent: str | None
    store: Any


class Host(Protocol):
    """A running host: the URI templates it serves, and reading one URI.

    ``read`` raises a :class:`~engine.resources.ResourceError` for every
    refusal; it is cancellable (blocking work runs in a worker thread).
    """

    def templates(self) -> list[Template]: ...

    async def read(self, uri: ResourceURI) -> Content: ...
