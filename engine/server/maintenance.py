"""The retention sweep: overdue approvals expire, old sessions and finished approvals go.

Every ``maintenance_interval_s``: pending approvals past their expiry are marked
``expired`` in the store (the waiting task does the same for its own; this catches
the ones whose task died with a connection or a crash), and sessions not updated for
``retention_s`` -- except those live on a connection -- are deleted with their history
and approvals, as are finished approvals and grants that ended or expired longer ago;
ratings older than that lose
who gave them and their comment (the rating stays for the statistics); memories past
their agent's ``memory.retention`` are deleted (reads skip them already).

Error handling: a failing sweep (a locked database, EMFILE) is logged and retried with
a doubling delay (up to ten minutes); it never ends the server.  Cancellation ends it.
"""

from __future__ import annotations

import logging
import time
from typing import NoReturn

import trio

from .hub import Hub

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 600.0


async def sweep(hub: Hub) -> tuple[int, int, int]:
    """One sweep: (approvals expired, sessions deleted, finished approvals deleted)."""
    expired = await hub.store.expire_actions()
    cutoff = time.time() - hub.settings.retention_s
    sessions, actions = await hub.store.prune(cutoff, keep_sessions=frozenset(hub.sessions))
    # Grants (remembered approvals) that ended or expired that long ago go too.
    await hub.store.prune_grants(cutoff)
    await hub.store.anonymise_ratings(cutoff)
    for agent in hub.config.agents.values():
        if agent.memory.retention is not None:
            gone = await hub.store.expire_memories(agent.name, time.time() - float(agent.memory.retention))
            if gone:
                log.info("retention: %d memories of agent %s deleted", gone, agent.name)
    return len(expired), sessions, actions


async def maintain(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
    """Sweep every ``maintenance_interval_s`` until cancelled."""
    interval = hub.settings.maintenance_interval_s
    delay = interval
    task_status.started()
    while True:
        await trio.sleep(delay)
        try:
            expired, sessions, actions = await sweep(hub)
        except Exception as exc:
            delay = min(delay * 2, MAX_BACKOFF_S)
            log.warning("retention sweep failed (%s: %s); retrying in %gs", type(exc).__name__, exc, delay)
            continue
        delay = interval
        if expired or sessions or actions:
            log.info("retention: %d approvals expired, %d sessions and %d finished approvals deleted",
                     expired, sessions, actions)
