"""What all connections share: the current config, the store, who is connected, pending approvals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from ..config import Config
from ..store import Store
from .approvals import ApprovalBroker
from .settings import ServerSettings

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Session


@attrs.define(eq=False)
class Hub:
    settings: ServerSettings
    config: Config
    store: Store
    approvals: ApprovalBroker = attrs.field(factory=ApprovalBroker)
    connections: set[Connection] = attrs.field(factory=set)
    # Sessions live on some connection right now, by id.
    sessions: dict[str, Session] = attrs.field(factory=dict)
    # Owns every live session's task. A session is attached to one connection at a time
    # and is detached (its work cancelled, its tools killed) when that connection closes;
    # it outlives a connection only by moving to another one of the same subject.
    nursery: trio.Nursery | None = None
