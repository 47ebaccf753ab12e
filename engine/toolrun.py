"""Run a configured tool through the sandbox: the only bridge from config to ``sandbox.run``.

The engine never starts processes itself.  This module turns a :class:`Tool`
into a :class:`sandbox.Spec` (limits, workspace, environment from the tool's
allowlist, the Python package its function lives in) and calls the sandbox.

Workspaces: every subject has their own directory under the workspace root
(``<root>/<safe name>-<sha256 prefix>``: readable, and never the same for two
subjects), 0700 and owned by the sandbox user; a tool declaring
``workspace_scope: shared`` gets ``<root>/shared`` instead.  A call sees only that
one directory.

Quota (``workspace_quota``), enforced around each call of a ``workspace: write``
tool: the workspace's disk use is measured before the call and every file the
call writes is capped (RLIMIT_FSIZE) at what is left; while the call runs it is
measured again every 100 ms (or less often for a large workspace) and the call is
killed once over; measured after, a workspace that grew past its quota makes the
call ``limit_exceeded``, and later calls can no longer grow any file (removing
files still works).  So one call can overshoot by what it writes between two
measurements, not more.  Scratch space (the per-call work dir, /tmp) is a sized
tmpfs and never reaches the disk.

Hard bound (opt-in): with ``SCONNECT_WORKSPACE_VOLUME`` set to a size (e.g. ``1GiB``),
each workspace is a filesystem of that size of its own (``sandbox.ensure_volume``: an
ext4 image loop-mounted on the directory before the first call that uses it), so the
kernel refuses writes past it (ENOSPC) and nothing overshoots; the per-tool quota
above still applies inside it.  It needs root with CAP_SYS_ADMIN and loop devices;
where they are missing (the shipped systemd unit drops CAP_SYS_ADMIN), or a workspace
already holds files from before, that workspace falls back to the quota alone, and
the log says so once.

Network by destination (``sandbox.network`` a list): each call gets its own egress
proxy (:mod:`engine.netproxy`) on a Unix socket for as long as it runs; the sandbox
sees only the socket's path, and every connection the proxy allows or refuses is
handed to the caller's ``Egress.on_record`` (the server audits and counts it).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

import sandbox

from . import netproxy
from .config.model import Tool
from .config.modules import default_search, locate_on_sys_path
from .config.tool_kinds import kind_of
from .config.units import parse_size

log = logging.getLogger(__name__)
# The call's egress proxy socket (a tool whose network is a list), set by run_tool around the
# kind's launch: the launch signature is every kind's, and only program tools use it.
_PROXY_SOCKET: contextvars.ContextVar[str | None] = contextvars.ContextVar("sconnect_proxy_socket", default=None)
# The call's go-ahead (run_tool's ``go``), for run_program to hand to sandbox.run, the same way.
_GO: contextvars.ContextVar[sandbox.Go | None] = contextvars.ContextVar("sconnect_go", default=None)
VOLUME_ENV = "SCONNECT_WORKSPACE_VOLUME"


def package_dir(tool: Tool) -> str:
    """Host path of the top-level package (a directory, or a module file) holding ``tool``'s function.

    The loader found it, beside the tool's file or on ``sys.path``, without
    importing anything (:mod:`engine.config.modules`); a Tool built in code is
    looked for on ``sys.path`` the same way.  The path is bound read-only into
    the sandbox under its own name, so it is not resolved: a linked
    ``greet.py`` must still be importable as ``greet``.  LookupError when the
    module is nowhere.
    """
    if tool.python_package:
        return tool.python_package
    module = (tool.python or "").split(":")[0]
    located = locate_on_sys_path(module, default_search())
    if located is None:
        raise LookupError(f"no Python module named {module!r}")
    return os.path.abspath(located.top)


def isolation_for(tool: Tool, caps: sandbox.Capabilities | None = None) -> Literal["namespaces", "process", "pool"]:
    """The backend a call of ``tool`` gets: the one it declares, except that ``pool``
    falls back to ``namespaces`` where this host cannot run the pool (no Landlock
    ABI >= 6, no seccomp filter) but can run namespace sandboxes.  That is never weaker:
    each call then has a whole sandbox of its own instead of a process in a shared one;
    it is only slower.  Where neither runs, ``pool`` stays and is refused with its reason.
    """
    declared = tool.sandbox.isolation
    if declared != "pool":
        return declared
    caps = caps if caps is not None else sandbox.detect()
    if caps.pool_problem() is None or caps.namespaces_problem() is not None:
        return declared
    return "namespaces"


def build_spec(
    tool: Tool,
    *,
    workspace: Path,
    work_root: Path,
    environ: Mapping[str, str] | None = None,
    proxy_socket: str | None = None,
) -> sandbox.Spec:
    """The sandbox spec of one call of ``tool`` (``proxy_socket``: its egress proxy, for a
    tool whose network is a list of destinations).

    Everything that goes into it is looked up on every call (the environment's allowed
    variables, the backend, the package's path); building the frozen spec from them,
    its checks included, is done once for each distinct set (:data:`_SPECS`).
    """
    needs = tool.sandbox
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in needs.env_allow if name in environ}
    env.update(needs.env)
    python_packages: tuple[str, ...] = (package_dir(tool),) if tool.python else ()
    key = (id(tool), str(workspace), str(work_root), proxy_socket, tuple(sorted(env.items())), isolation_for(tool),
           python_packages)
    cached = _SPECS.get(key)
    if cached is not None and cached[0] is tool:
        return cached[1]
    writable = list(needs.writable_paths)
    readable = list(needs.readable_paths)
    cwd = None
    if needs.workspace != "none":
        cwd = str(workspace)
        (writable if needs.workspace == "write" else readable).append(str(workspace))
    spec = sandbox.Spec(
        argv=tuple(tool.command),
        python=tool.python,
        python_packages=python_packages,
        timeout_s=float(needs.timeout),
        cpu_time_s=float(needs.cpu_time),
        memory_bytes=int(needs.memory),
        max_output_bytes=int(needs.max_output),
        network=needs.network is True,
        proxy_socket=proxy_socket,
        isolation=key[5],
        readable_paths=tuple(readable),
        writable_paths=tuple(writable),
        cwd=cwd,
        env=key[4],
        work_root=key[2],
    )
    if len(_SPECS) >= _SPECS_MAX:
        _SPECS.clear()
    _SPECS[key] = (tool, spec)
    return spec


# Specs built, by the identity of their tool (kept in the value, so that the id stays its own
# while cached) and everything else they were built from. Bounded: a full cache starts over.
_SPECS: dict[tuple[Any, ...], tuple[Tool, sandbox.Spec]] = {}
_SPECS_MAX = 1024


def state_dir_problem(state_dir: Path) -> str | None:
    """Why tools could not reach ``state_dir``'s workspace and work dirs, with the fix.

    Tools run as the sandbox user when the engine is root; a state directory below a
    directory that user cannot traverse (a 0700 home such as /root) would make every
    call with a workspace fail, so ``serve`` refuses to start on it.
    """
    if sandbox.sandbox_user() is None:
        return None
    blocked = sandbox.first_untraversable(str(state_dir.resolve() / "workspace"))
    if blocked is None:
        return None
    return (
        f"the sandbox user (uid {sandbox.SANDBOX_UID}) cannot reach the state directory "
        f"{state_dir.resolve()}: {blocked} is not traversable. Start with "
        f"--state-dir /var/lib/sconnect (or another directory outside {blocked}), "
        f"or give {blocked} o+x"
    )


def try_call(tool: Tool, arguments: Any) -> sandbox.Result:
    """One real sandboxed call of ``tool`` in a throwaway state (for ``sconnect check``)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sconnect-check-"))
    try:
        os.chmod(root, 0o711)
        (root / "work").mkdir(mode=0o711)
        return trio.run(
            functools.partial(
                run_tool, tool, arguments, workspace=root / "workspace", work_root=root / "work",
                subject="sconnect-check",
            )  # fmt: skip
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ENTRIES = 100_000  # a workspace with more entries counts as full


def subject_dir_name(subject: str) -> str:
    """A directory name for ``subject``: readable, and distinct for distinct subjects."""
    readable = _UNSAFE.sub("_", subject)[:40].lstrip(".") or "_"
    return f"{readable}-{hashlib.sha256(subject.encode()).hexdigest()[:12]}"


def workspace_for(tool: Tool, root: Path, subject: str) -> Path:
    """The workspace directory a call of ``tool`` by ``subject`` uses (created 0700)."""
    if tool.sandbox.workspace_scope == "shared":
        return shared_workspace(root)
    return subject_workspace(root, subject)


def shared_workspace(root: Path) -> Path:
    """The area every subject's calls may share (tools with ``workspace_scope: shared``)."""
    return _area(root / "shared")


def subject_workspace(root: Path, subject: str) -> Path:
    """``subject``'s own workspace under ``root`` (created 0700, the sandbox user's)."""
    return _area(root / subject_dir_name(subject))


@functools.cache
def _private_root(root: Path) -> None:
    """The workspace root: traversable, never listable (user names are no one's business)."""
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(root, 0o711)


def _area(path: Path) -> Path:
    _private_root(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        if os.geteuid() == 0:
            os.chown(path, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)
    return path


def disk_usage(path: Path) -> int:
    """Bytes of disk ``path`` holds (blocks, symlinks not followed; blocking)."""
    total, seen = 0, 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > _MAX_ENTRIES:
                return 2**62
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
    return total


async def _ignore(record: netproxy.EgressRecord) -> None:
    await trio.lowlevel.checkpoint()


@attrs.frozen
class Egress:
    """How a call's egress proxy behaves and where its connection records go."""

    on_record: netproxy.OnRecord = _ignore
    config: netproxy.ProxyConfig = netproxy.ProxyConfig()


@contextlib.asynccontextmanager
async def egress_proxy(tool: Tool, egress: Egress | None) -> AsyncIterator[str | None]:
    """The socket path of a proxy serving this call, or None for a tool without a list.

    The proxy lives exactly as long as the block; a list that does not parse (a Tool
    built in code: the loader checks YAML ones) raises ``sandbox.SpecError``.
    """
    network = tool.sandbox.network
    if isinstance(network, bool):
        yield None
        return
    try:
        allowlist = netproxy.Allowlist.parse(network)
    except netproxy.AllowlistError as exc:
        where = "" if exc.index is None else f"[{exc.index}]"
        raise sandbox.SpecError(f"sandbox.network{where}: {exc}") from None
    egress = egress or Egress()
    async with netproxy.open_call_proxy(
        allowlist, egress.on_record, config=egress.config, owner=sandbox.sandbox_user()
    ) as path:
        yield path


async def run_tool(
    tool: Tool, arguments: Any, *, workspace: Path, work_root: Path, subject: str, egress: Egress | None = None,
    go: sandbox.Go | None = None,
) -> sandbox.Result:
    """Run one call by ``subject``; ``workspace`` is the root of every subject's workspace.

    The tool's kind launches it (engine/config/tool_kinds.py): :func:`run_program` for a
    command or a Python function, an MCP server's runtime for a tool of an mcp_server file.
    A tool with ``output: content`` has its MCP content blocks checked and split from
    its output (``result.content``); one that breaks the contract is an ``error``.
    A tool whose network is a list gets a proxy for the call's duration (its socket
    reaches the sandbox through :data:`_PROXY_SOCKET`); its connections go to
    ``egress.on_record``.
    ``go`` (the caller's "the decision is on disk") is awaited exactly once before the
    tool gets any input: by ``sandbox.run`` while the sandbox starts, for a kind whose
    launch is :func:`run_program` (``early_start``), else before the kind launches at all.
    Raises ``sandbox.SandboxError`` subclasses (e.g. IsolationUnavailable); ``TypeError``
    for a kind that does not run as one program (a chain, a builtin).
    """
    if isinstance(tool.sandbox.network, bool):
        # No list, no proxy: the common case skips the proxy's context manager altogether.
        result = await _run_tool(tool, arguments, workspace=workspace, work_root=work_root, subject=subject, go=go)
    else:
        async with egress_proxy(tool, egress) as proxy_socket:
            token = _PROXY_SOCKET.set(proxy_socket)
            try:
                result = await _run_tool(
                    tool, arguments, workspace=workspace, work_root=work_root, subject=subject, go=go
                )
            finally:
                _PROXY_SOCKET.reset(token)
    if tool.output == "content":
        from .protocol.content import with_content

        # Linear in the output (megabytes of base64 at most): off the event loop.
        checked: sandbox.Result = await trio.to_thread.run_sync(with_content, result)
        return checked
    return result


async def _run_tool(
    tool: Tool, arguments: Any, *, workspace: Path, work_root: Path, subject: str, go: sandbox.Go | None
) -> sandbox.Result:
    needs = tool.sandbox
    own = workspace_for(tool, workspace, subject) if needs.workspace != "none" else workspace
    kind = kind_of(tool)
    if kind.launch is None:
        raise TypeError(f"{tool.name!r} is a {kind.name} tool: it does not run as one program")
    if go is not None and not kind.early_start:
        await go()
        go = None
    token = _GO.set(go)
    try:
        result: sandbox.Result = await kind.launch(tool, arguments, workspace=own, work_root=work_root)
    finally:
        _GO.reset(token)
    return result


async def run_program(tool: Tool, arguments: Any, *, workspace: Path, work_root: Path) -> sandbox.Result:
    """One call of a program tool (command, python) in its sandbox; ``workspace`` is the call's own.
    Run from :func:`run_tool`, the sandbox starts while the call's go-ahead is awaited."""
    go = _GO.get()
    _GO.set(None)  # one call of the sandbox takes it
    needs = tool.sandbox
    own = workspace
    volume = await _volume(own) if needs.workspace != "none" else None
    spec = build_spec(tool, workspace=own, work_root=work_root, proxy_socket=_PROXY_SOCKET.get())
    if needs.workspace != "write":
        return await sandbox.run(spec, arguments, go=go)
    quota = int(needs.workspace_quota)
    used = await trio.to_thread.run_sync(disk_usage, own)
    spec = attrs.evolve(spec, max_file_bytes=max(1, min(spec.max_file_bytes, quota - used)))
    started = trio.current_time()
    over: list[int] = []
    result: sandbox.Result | None = None
    async with trio.open_nursery() as nursery:
        # A call that starts over quota may still remove files: only growth is stopped.
        nursery.start_soon(_watch_quota, own, max(quota, used), nursery.cancel_scope, over)
        result = await sandbox.run(spec, arguments, go=go)
        nursery.cancel_scope.cancel()
    after = await trio.to_thread.run_sync(disk_usage, own)
    if over or result is None:
        # The watcher cancelled the call: the sandbox killed the tool and re-raised
        # Cancelled, which the nursery absorbed.
        return sandbox.Result(
            status="limit_exceeded", output=None, stderr_tail="", exit_code=None, signal=None,
            wall_time_s=round(trio.current_time() - started, 6), cpu_time_s=0.0,
            peak_memory_bytes=0, truncated=False, backend=spec.isolation,
            message=f"workspace quota of {quota} bytes exceeded ({max([*over, after])} bytes used): killed",
        )  # fmt: skip
    if after > quota and after > used:
        message = f"workspace quota of {quota} bytes exceeded ({after} bytes used)"
        result = attrs.evolve(result, status="limit_exceeded", message=message)
    elif volume is not None and result.status != "ok" and "No space left on device" in result.stderr_tail:
        message = f"workspace full: its volume of {volume} bytes is a hard bound ({after} bytes used)"
        result = attrs.evolve(result, status="limit_exceeded", message=message)
    return result


@functools.cache
def volume_bytes() -> int | None:
    """The size of each workspace's own filesystem (``SCONNECT_WORKSPACE_VOLUME``), or None."""
    text = os.environ.get(VOLUME_ENV, "").strip()
    if not text:
        return None
    try:
        return int(parse_size(text))
    except ValueError as exc:
        log.error("%s=%r ignored: %s; workspaces are bounded by their quota alone", VOLUME_ENV, text, exc)
        return None


_volume_locks: dict[Path, trio.Lock] = {}
_volume_refused: set[Path] = set()


async def _volume(own: Path) -> int | None:
    """Mount ``own``'s volume when volumes are on and possible: its size, else None (polling)."""
    size = volume_bytes()
    if size is None:
        return None
    problem = sandbox.volume_problem()
    if problem is not None:
        if own.parent not in _volume_refused:
            _volume_refused.add(own.parent)
            log.warning("%s is set, but workspace volumes are unavailable: %s; quotas are polled", VOLUME_ENV, problem)
        return None
    lock = _volume_locks.setdefault(own, trio.Lock())
    async with lock:  # two first calls of one subject: one mounts, the other finds it mounted
        try:
            await trio.to_thread.run_sync(
                sandbox.ensure_volume, str(own), str(own.parent / ".volumes" / f"{own.name}.img"), size,
                sandbox.SANDBOX_UID, sandbox.SANDBOX_GID,
            )  # fmt: skip
        except sandbox.VolumeError as exc:
            if own not in _volume_refused:
                _volume_refused.add(own)
                log.warning("no volume for the workspace %s (%s): its quota is polled", own.name, exc)
            return None
    return size


async def _watch_quota(path: Path, limit: int, call: trio.CancelScope, over: list[int]) -> None:
    """Measure ``path`` while a call runs; past ``limit``, record the usage and end the call.

    Polls every 100 ms, or five times the last measurement's duration when that is longer,
    so a large workspace costs at most a fifth of a core.  Bounds what one call can write
    to about its write rate times that interval (files are capped one by one as well).
    """
    while True:
        begun = trio.current_time()
        used = await trio.to_thread.run_sync(disk_usage, path)
        if used > limit:
            over.append(used)
            call.cancel()
            return
        await trio.sleep(max(0.1, 5 * (trio.current_time() - begun)))
