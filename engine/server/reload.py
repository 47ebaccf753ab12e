"""Hot reload: watch the configuration directories and swap in a new configuration atomically.

The watcher polls the YAML files' (and agents.d/'s Python modules') names, sizes and modification times (once a
second by default; SIGHUP reloads at once).  A change loads and validates the
whole configuration in a worker thread.  Valid: the hub's configuration,
resource hosts and policy revision are replaced in one step (new turns and
calls see the new config; calls already running finish on the one they
started with), every connected client gets a fresh ``tool_list``, and an
action still waiting for approval on a tool that no longer exists ends as
``cancelled`` without running, and a grant (a remembered approval) whose tool
now has a higher level, or whose rule changed or went, ends.  Invalid: the last
good configuration keeps serving and every error (file, line, field) is logged
and audited.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable
from pathlib import Path

import trio

from ..agents import agent_module_files
from ..audit import AuditEvent
from ..config import config_files, load_config
from ..config.loader import KIND_DIRS
from ..decision import policy_revision
from ..errors import ConfigError
from ..resources import ResourceHosts
from ..upstream import sync_current
from .grants import end_stale
from .hub import Hub

log = logging.getLogger(__name__)
# Longest wait between two attempts of a watcher that keeps failing.
MAX_BACKOFF_S = 60.0
Fingerprint = frozenset[tuple[str, int, int, int]]


def fingerprint(root: Path) -> Fingerprint:
    """What a change to the loaded files changes: each file's path, inode, size and mtime."""
    found = set()
    # The Python modules of custom agents (agents.d/*.py) are loaded with the configuration too.
    for paths in [*(config_files(root, kind) for kind in KIND_DIRS), agent_module_files(root)]:
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            found.add((str(path), info.st_ino, info.st_size, info.st_mtime_ns))
    for name in KIND_DIRS.values():
        # A directory appearing or vanishing is a change even while it holds no file.
        found.add((str(root / name), int((root / name).is_dir()), 0, 0))
    return frozenset(found)


async def reload_config(hub: Hub, reason: str) -> bool:
    """Load, validate and swap; True when the new configuration is in force."""
    root = hub.settings.config_dir
    try:
        config = await trio.to_thread.run_sync(load_config, root)
        revision = await trio.to_thread.run_sync(policy_revision, config)
        resources = ResourceHosts(config, hub.settings.state_dir)
    except ConfigError as exc:
        # One log line per problem: a log line is one line (newlines inside would be escaped).
        log.error("configuration reload refused (%s); the previous configuration keeps serving; %d problem(s):",
                  reason, len(exc.problems))
        for problem in exc.problems[:50]:
            log.error("  %s", problem)
        hub.refuse_reload(tuple(str(problem) for problem in exc.problems))
        hub.metrics.record_config_reload(ok=False)
        await hub.audit.record(
            AuditEvent(
                kind="config_reload", outcome="error", policy_revision=hub.policy_revision,
                details={"reason": reason, "errors": [str(p) for p in exc.problems[:50]], "count": len(exc.problems)},
            )
        )
        return False
    removed = set(hub.config.tools) - set(config.tools)
    previous = hub.policy_revision
    hub.swap_config(config, resources, revision)
    sync_current(config)  # MCP servers of removed or changed files stop, new ones start
    hub.metrics.record_config_reload(ok=True)
    await hub.audit.record(
        AuditEvent(
            kind="config_reload", outcome="ok", policy_revision=revision,
            details={"reason": reason, "tools": sorted(config.tools), "removed_tools": sorted(removed),
                     "previous_revision": previous},
        )
    )
    # Grants resting on a tool level or a rule that changed end now (each audited). A failure
    # (the database away) leaves them listed as live, never usable: each call checks the same.
    try:
        await end_stale(hub, config, revision)
    except Exception as exc:
        log.warning("configuration reload: ending stale grants failed (%s: %s)", type(exc).__name__, exc)
    for pending in list(hub.approvals.pending.values()):
        if pending.frame.kind == "tool" and pending.frame.name in removed:
            hub.approvals.close(
                pending, "cancelled", f"the tool {pending.frame.name!r} was removed from the configuration"
            )
    for conn in list(hub.connections):
        conn.send(conn.tool_list())
    log.info("configuration reloaded (%s): %d tools, policy %s", reason, len(config.tools), revision[:19])
    return True


async def watch_config(
    hub: Hub,
    *,
    interval_s: float = 1.0,
    signals: Iterable[int] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll for changes (and reload on each of ``signals``, e.g. SIGHUP) until cancelled.

    A failing poll or reload (anything but a refused configuration, which
    :func:`reload_config` handles) is logged and retried with a doubling delay.
    """
    root = hub.settings.config_dir
    seen = await trio.to_thread.run_sync(fingerprint, root)
    wake = trio.Event()

    async def on_signals() -> None:
        nonlocal wake
        with trio.open_signal_receiver(*signals) as received:
            async for signum in received:
                log.info("received %s: reloading the configuration", signal.Signals(signum).name)
                wake.set()

    delay = interval_s
    retry_forced = False
    async with trio.open_nursery() as nursery:
        if signals:
            nursery.start_soon(on_signals)
        task_status.started()
        while True:
            with trio.move_on_after(delay):
                await wake.wait()
            forced, wake = wake.is_set() or retry_forced, trio.Event()
            try:
                current = await trio.to_thread.run_sync(fingerprint, root)
                if current != seen or forced:
                    await reload_config(hub, "signal" if forced else "files changed")
                    seen = current
            except Exception as exc:
                # EMFILE, a directory briefly unreadable...: never the end of the server.
                # The change is still unseen, so the next attempt reloads it.
                delay = min(delay * 2, MAX_BACKOFF_S)
                retry_forced = forced
                log.warning("config watcher: %s: %s; retrying in %gs", type(exc).__name__, exc, delay)
                continue
            delay, retry_forced = interval_s, False
