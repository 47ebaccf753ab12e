"""What all connections share: the current config, the store, who is connected, pending approvals.

The hub sits below the connections, sessions and actions that use it: it knows them
only through the small protocols below (:class:`Peer`, :class:`LiveSession`), and
imports none of their modules.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

import attrs
import trio

from ..audit import AuditLog
from ..auth import Principal
from ..config import Config
from ..decision import policy_revision
from ..protocol import LifecycleState, ServerFrame, ToolList
from ..resources import ResourceHosts
from ..store import Store
from .approvals import ApprovalBroker, ApprovalBus, LocalBus
from .metrics import ServerMetrics
from .settings import ServerSettings


class Acting(Protocol):
    """Anything that acts for a principal (a connection, a front door's requester)."""

    @property
    def principal(self) -> Principal: ...


class Peer(Acting, Protocol):
    """A connected client as the hub's users reach it (a reload's new tool list, a shutdown
    notice, an approval request for an admin): the hub knows no more of a connection."""

    def send(self, frame: ServerFrame, *, control: bool = False) -> None: ...

    def tool_list(self, reply_to: str | None = None) -> ToolList: ...


class LiveSession(Protocol):
    """A session live on some connection, as the hub's users see it (the hub knows no more)."""

    @property
    def session_id(self) -> str: ...

    @property
    def state(self) -> LifecycleState: ...

    @property
    def conn(self) -> Acting:
        """The connection (or front door) it is attached to now."""
        ...

    @property
    def ending(self) -> bool: ...

    async def detach(self) -> None: ...

    async def wait_ended(self) -> None: ...


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
    # How approvals and controls reach other instances (engine.server.pgbus); none: LocalBus.
    approval_bus: ApprovalBus = attrs.field(factory=LocalBus)
    metrics: ServerMetrics = attrs.field(factory=ServerMetrics)
    # Lifecycle flags for /readyz: listening for clients; draining before exit.
    serving: bool = False
    shutting_down: bool = False
    connections: set[Peer] = attrs.field(factory=set)
    # Sessions live on some connection right now, by id.
    sessions: dict[str, LiveSession] = attrs.field(factory=dict)
    # Owns every live session's task. A session is attached to one connection at a time
    # and is detached (its work cancelled, its tools killed) when that connection closes;
    # it outlives a connection only by moving to another one of the same subject.
    nursery: trio.Nursery | None = None
    # Sandboxed tool runs at once, overall; per session (or connection) in `run_slots`.
    tool_runs: trio.CapacityLimiter = attrs.field()
    run_slots: dict[str, trio.CapacityLimiter] = attrs.field(factory=dict)
    # Direct tool calls and resource reads running now (a graceful stop waits for them).
    inflight: int = 0
    # The errors of the last refused reload (empty once a reload succeeds), for /readyz and logs.
    reload_errors: tuple[str, ...] = ()
    # When the configuration in force was loaded, and when a reload was last refused
    # (None once one succeeds), as wall-clock epochs: the console's Policies page shows them.
    config_loaded_at: float = attrs.field(factory=time.time)
    reload_refused_at: float | None = None

    # --- changes, each through its owner's method ------------------------------------------

    def swap_config(self, config: Config, resources: ResourceHosts, revision: str) -> None:
        """Put a reloaded configuration in force for the next turn or call (one synchronous
        step, so that a call taking its snapshot sees all three from the same load)."""
        self.config, self.resources, self.policy_revision = config, resources, revision
        self.reload_errors = ()
        self.config_loaded_at, self.reload_refused_at = time.time(), None

    def refuse_reload(self, errors: tuple[str, ...]) -> None:
        """A reload was refused: the last good configuration keeps serving; say why in /readyz."""
        self.reload_errors = errors
        self.reload_refused_at = time.time()

    @contextlib.contextmanager
    def call_in_flight(self) -> Iterator[None]:
        """Count a direct call or read while it runs: a graceful stop waits for it."""
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def busy(self) -> bool:
        """Whether any turn, tool call or read is running (what a graceful stop waits for)."""
        working = (LifecycleState.PROCESSING, LifecycleState.TOOL_USE)
        return self.inflight > 0 or any(s.state in working for s in self.sessions.values())

    @tool_runs.default
    def _tool_runs(self) -> trio.CapacityLimiter:
        return trio.CapacityLimiter(self.settings.max_tool_runs)

    def slots_for(self, key: str) -> trio.CapacityLimiter:
        """The per-session (or per-connection) limit on tool runs at once."""
        limiter = self.run_slots.get(key)
        if limiter is None:
            limiter = self.run_slots[key] = trio.CapacityLimiter(self.settings.max_tool_runs_per_session)
        return limiter

    @resources.default
    def _resources(self) -> ResourceHosts:
        return ResourceHosts(self.config, self.settings.state_dir)

    @policy_revision.default
    def _revision(self) -> str:
        return policy_revision(self.config)
