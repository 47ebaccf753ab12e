"""What all connections share: the current config, the store, who is connected, pending approvals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from ..audit import AuditLog
from ..config import Config
from ..decision import policy_revision
from ..resources import ResourceHosts
from ..store import Store
from .approvals import ApprovalBroker
from .metrics import ServerMetrics
from .settings import ServerSettings

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Session


@attrs.define(eq=False)
class Hub:
    settings: ServerSettings
    config: Config
    store: Store
    audit: AuditLog
    resources: ResourceHosts = attrs.field()
    # Hash of the policy files in force, named by every audit record.
    policy_revision: str = attrs.field()
    approvals: ApprovalBroker = attrs.field(factory=ApprovalBroker)
    metrics: ServerMetrics = attrs.field(factory=ServerMetrics)
    # Lifecycle flags for /readyz: listening for clients; draining before exit.
    serving: bool = False
    shutting_down: bool = False
    connections: set[Connection] = attrs.field(factory=set)
    # Sessions live on some connection right now, by id.
    sessions: dict[str, Session] = attrs.field(factory=dict)
    # Owns every live session's task. A session is attached to one connection at a time
    # and is detached (its work cancelled, its tools killed) when that connection closes;
    # it outlives a connection only by moving to another one of the same subject.
    nursery: trio.Nursery | None = None
    # Direct tool calls and resource reads running now (a graceful stop waits for them).
    inflight: int = 0
    # The errors of the last refused reload (empty once a reload succeeds), for /readyz and logs.
    reload_errors: tuple[str, ...] = ()

    def busy(self) -> bool:
        """Whether any turn, tool call or read is running (what a graceful stop waits for)."""
        from ..protocol import LifecycleState

        working = (LifecycleState.PROCESSING, LifecycleState.TOOL_USE)
        return self.inflight > 0 or any(s.state in working for s in self.sessions.values())

    @resources.default
    def _resources(self) -> ResourceHosts:
        return ResourceHosts(self.config, self.settings.state_dir)

    @policy_revision.default
    def _revision(self) -> str:
        return policy_revision(self.config)
