"""The descriptor budget: how many connections the process can hold without running out of files.

Every TCP connection is a file descriptor, and so are the databases, the audit log, the
listeners and each sandboxed tool's pipes.  When they run out (EMFILE), everything
that opens a file fails -- the config watcher, SQLite, the sandbox -- so the limits on
connections are derived from ``RLIMIT_NOFILE``, keeping a reserve for the rest:

- at start the soft limit is raised to the hard limit (systemd's ``LimitNOFILE=`` sets
  both; a shell's default soft limit is often 1024 under a hard limit far higher);
- ``reserve`` = 32 (databases, audit log, listeners, the event loop's own) + the health
  listener's connections + 8 per sandboxed tool run at once, at most half the limit;
- of what is left, a quarter for connections still in their handshake (anonymous: an
  idle TCP connection costs an attacker nothing), an eighth of that per peer address
  (at least 4), and the rest for authenticated connections.

Settings given explicitly win, with a warning when they exceed the budget.
"""

from __future__ import annotations

import logging
import resource

import attrs

from .health import MAX_CONNECTIONS as HEALTH_CONNECTIONS
from .settings import ServerSettings

log = logging.getLogger(__name__)

BASE_RESERVE = 32
PER_TOOL_RUN = 8
# An unlimited hard limit (RLIM_INFINITY) is not a number the kernel accepts as a soft limit.
_CEILING = 1 << 20


def raise_soft_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (best effort); the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return _CEILING if soft == resource.RLIM_INFINITY else soft


@attrs.frozen
class Budget:
    descriptors: int
    reserve: int
    max_handshakes: int
    max_handshakes_per_peer: int
    max_connections: int


def plan(settings: ServerSettings, descriptors: int) -> Budget:
    """The limits for ``descriptors`` open files (explicit settings win)."""
    health = HEALTH_CONNECTIONS if settings.health_port is not None else 0
    reserve = min(BASE_RESERVE + health + PER_TOOL_RUN * settings.max_tool_runs, descriptors // 2)
    available = max(descriptors - reserve, 8)
    handshakes = settings.max_handshakes or max(available // 4, 4)
    per_peer = settings.max_handshakes_per_peer or max(handshakes // 8, 4)
    connections = min(settings.max_connections, max(available - handshakes, 1))
    budget = Budget(descriptors, reserve, handshakes, min(per_peer, handshakes), connections)
    if handshakes + settings.max_connections > available:
        log.warning(
            "%d open files allow %d connections at once (limit connections is %d): raise LimitNOFILE= "
            "(or ulimit -n) to hold more", descriptors, connections, settings.max_connections,
        )
    return budget


def apply(settings: ServerSettings) -> ServerSettings:
    """Raise the soft limit, then the settings with the derived limits filled in (and logged)."""
    budget = plan(settings, raise_soft_limit())
    log.info(
        "open files: %d; at most %d connections, %d handshakes at once (%d per address)",
        budget.descriptors, budget.max_connections, budget.max_handshakes, budget.max_handshakes_per_peer,
    )
    return attrs.evolve(
        settings, max_connections=budget.max_connections, max_handshakes=budget.max_handshakes,
        max_handshakes_per_peer=budget.max_handshakes_per_peer,
    )
