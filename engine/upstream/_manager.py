"""`Upstreams`: the MCP servers of the configuration in force, run in the hub's nursery.

The server starts one `Upstreams` next to its connections (`run`), makes it the current
one for every task it starts (`use`), and calls `sync(config)` after each reload: a
pool (``single_use``) or shared server (``shared``) is started for each ``mcp_server``
file that needs one, and the ones whose file was removed or changed are cancelled,
which kills their sandboxes. ``per_call`` servers need nothing running.

`call_tool` is the one entry point the engine uses (from `toolrun.run_tool`): it
routes an exposed tool's call to its file's runtime, or — with no `Upstreams` current
(the `sconnect tools run` command, scripts) or no runtime for that file yet — starts the
server for this call alone.

A runtime is keyed by the file and everything that shapes its server (command,
lifecycle, pins, sandbox), so an edit that changes any of it gives a fresh server, while
a reload that leaves the file alone keeps the running one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

import sandbox

from ..config import Config, Tool
from ..config.model import UpstreamRef
from ._lifecycle import MismatchHook, SharedServer, SingleUsePool, call_once

_CURRENT: contextvars.ContextVar[Upstreams | None] = contextvars.ContextVar("sconnect_upstreams", default=None)


def server_spec(ref: UpstreamRef, *, workspace: Path, work_root: Path) -> sandbox.Spec:
    """The sandbox of an MCP server: its file's sandbox block, like any tool's."""
    from ..toolrun import build_spec

    carrier = Tool(
        name="mcp", description="mcp", parameters={}, permission_level=0,
        command=ref.server.command, sandbox=ref.sandbox,
    )
    return build_spec(carrier, workspace=workspace, work_root=work_root)


def runtime_key(ref: UpstreamRef) -> str:
    return "\0".join((ref.file, repr(ref.server), repr(ref.sandbox)))


@attrs.define(eq=False)
class _Runtime:
    runner: SingleUsePool | SharedServer
    scope: trio.CancelScope


@attrs.define(eq=False)
class Upstreams:
    """The running MCP servers of one engine. Mutable; its tasks live in `run`'s nursery."""

    workspace: Path
    work_root: Path
    on_mismatch: MismatchHook | None = None
    _nursery: trio.Nursery | None = None
    _runtimes: dict[str, _Runtime] = attrs.Factory(dict)

    async def run(self, config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the servers `config` needs until cancelled; cancellation kills them all."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.sync(config)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._runtimes.clear()

    def sync(self, config: Config) -> None:
        """Start what `config` needs and stop what it no longer declares (never blocks)."""
        if self._nursery is None:
            return
        wanted: dict[str, list[UpstreamRef]] = {}
        for tool in config.tools.values():
            ref = tool.upstream
            if ref is not None and ref.server.lifecycle != "per_call":
                wanted.setdefault(runtime_key(ref), []).append(ref)
        for key in list(self._runtimes):
            if key not in wanted:
                self._runtimes.pop(key).scope.cancel()
        for key, refs in wanted.items():
            if key in self._runtimes:
                continue
            first = refs[0]
            spec = server_spec(first, workspace=self.workspace, work_root=self.work_root)
            server = first.server
            runner: SingleUsePool | SharedServer
            backoff = float(server.restart_backoff)
            if server.lifecycle == "single_use":
                runner = SingleUsePool(
                    server.command, spec, server.pool_size, float(server.startup_timeout), refs, self.on_mismatch,
                    restart_backoff_s=backoff,
                )
            else:
                runner = SharedServer(server.command, spec, float(server.startup_timeout), refs, self.on_mismatch,
                                      restart_backoff_s=backoff)
            scope = trio.CancelScope()
            self._runtimes[key] = _Runtime(runner, scope)
            self._nursery.start_soon(_run_in, scope, runner)

    def runner_for(self, ref: UpstreamRef) -> SingleUsePool | SharedServer | None:
        runtime = self._runtimes.get(runtime_key(ref))
        return runtime.runner if runtime is not None else None

    async def call(self, tool: Tool, arguments: Mapping[str, Any], *, workspace: Path) -> sandbox.Result:
        """One call; a per_call server gets the caller's own ``workspace``, a server kept
        running (shared, single_use) was started before anyone called and sees only the
        shared area (``self.workspace``)."""
        ref = tool.upstream
        assert ref is not None
        runner = self.runner_for(ref)
        if runner is None:
            spec = server_spec(ref, workspace=workspace, work_root=self.work_root)
            return await call_once(ref, spec, arguments, self.on_mismatch)
        return await runner.call(ref, arguments)


async def _run_in(scope: trio.CancelScope, runner: SingleUsePool | SharedServer) -> None:
    with scope:
        await runner.run()


def for_hub(hub: Any) -> Upstreams:
    """The server's Upstreams: pin mismatches audited on `hub.audit`; made current for
    the calling task (the server's main task) and every task it starts from now on."""

    async def audit_mismatch(ref: UpstreamRef, reason: str) -> None:
        from ..audit import AuditEvent

        await hub.audit.record(
            AuditEvent(
                kind="decision", action="tool.call", target=ref.name, effect="deny", outcome="pin_mismatch",
                decided_by="rule", policy_revision=hub.policy_revision,
                details={"file": ref.file, "upstream_tool": ref.tool, "reason": reason},
            )
        )

    from ..toolrun import shared_workspace

    # Servers kept running serve every subject: they may see the shared area, never a user's own.
    upstreams = Upstreams(
        workspace=shared_workspace(hub.settings.workspace), work_root=hub.settings.work_root,
        on_mismatch=audit_mismatch,
    )
    _CURRENT.set(upstreams)
    return upstreams


def sync_current(config: Config) -> None:
    """After a reload: start and stop servers to match `config` (no-op without a server)."""
    upstreams = current()
    if upstreams is not None:
        upstreams.sync(config)


@contextlib.contextmanager
def use(upstreams: Upstreams) -> Iterator[Upstreams]:
    """Make `upstreams` the current one for this task and the tasks it starts from now on."""
    token = _CURRENT.set(upstreams)
    try:
        yield upstreams
    finally:
        _CURRENT.reset(token)


def current() -> Upstreams | None:
    return _CURRENT.get()


async def call_tool(tool: Tool, arguments: Any, *, workspace: Path, work_root: Path) -> sandbox.Result:
    """Run one call of an exposed MCP tool (see the module docstring for the routing)."""
    ref = tool.upstream
    if ref is None:
        raise ValueError(f"tool {tool.name!r} is not an MCP server's tool")
    if not isinstance(arguments, Mapping):
        arguments = {}
    upstreams = current()
    if upstreams is not None:
        return await upstreams.call(tool, arguments, workspace=workspace)
    spec = server_spec(ref, workspace=workspace, work_root=work_root)
    return await call_once(ref, spec, arguments)
