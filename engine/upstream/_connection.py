"""One running MCP server in its sandbox, initialised, its tools listed: a `Connection`.

`open_connection(command, spec, startup_timeout_s)` starts the server with
`sandbox.open_session`, speaks MCP to it through `mcp_streams`, initialises the
session and lists every tool (all pages), all within `startup_timeout_s`; otherwise it
raises `StartFailed` with the reason and the server's stderr tail.

`Connection.call(...)` is one `tools/call`, raced against the server breaking (exit,
garbage on stdout) and against the call's timeout; it returns a `sandbox.Result`
whatever happens. After a fault or a timeout the connection is `broken` and must be
thrown away: its owner restarts the server.

Resource handling: leaving `open_connection` (normally, on error, on cancellation)
closes the MCP session and kills the sandbox; nothing of the server outlives it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import trio

import sandbox

from ..config.model import definition_digest
from ..protocol import content as mcp_content
from ._errors import StartFailed, single_errors
from ._transport import Fault, mcp_streams

# A JSON-RPC message may be this much larger than the tool's max_output (envelope, escaping).
_MESSAGE_SLACK = 64 * 1024


@attrs.frozen
class Definition:
    """A tool as the server lists it."""

    description: str
    parameters: Mapping[str, Any]

    @property
    def digest(self) -> str:
        return definition_digest(self.description, self.parameters)


@attrs.define(eq=False)
class Connection:
    """A ready server. Owned by the task that opened it; calls may come from any task."""

    client: Any  # mcp.ClientSession
    session: sandbox.Session
    fault: Fault
    tools: dict[str, Definition]
    started_s: float  # how long start-up took
    # Set when the server broke or a call timed out: no further call may use it.
    broken: trio.Event = attrs.Factory(trio.Event)
    broken_reason: str = ""

    def break_(self, reason: str) -> None:
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()

    def mismatch(self, upstream: str, digest: str) -> str | None:
        """Why the listed `upstream` tool no longer matches its pinned `digest`, or None."""
        listed = self.tools.get(upstream)
        if listed is None:
            return f"the server no longer offers the tool {upstream!r}"
        if listed.digest != digest:
            return (
                f"the server's definition of {upstream!r} changed since it was pinned "
                f"(pinned {digest[:19]}, now {listed.digest[:19]}): review it and pin again"
            )
        return None

    def failure(self) -> str:
        """A readable reason the server stopped serving (fault, exit, or timeout)."""
        parts = [self.broken_reason or self.fault.message or "the server stopped"]
        ended = self.session.exit_message()
        if ended is not None:
            parts.append(f"server {ended}")
        return "; ".join(parts)

    async def call(self, upstream: str, arguments: Mapping[str, Any], *, timeout_s: float) -> sandbox.Result:
        """One tools/call; a Result in every case (see the module docstring)."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED
        from pydantic import ValidationError

        started = trio.current_time()
        outcome: Any = None
        error: str | None = None
        timed_out = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await self._broken_or_fault()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            with trio.move_on_after(timeout_s) as timer:
                try:
                    outcome = await self.client.call_tool(upstream, dict(arguments))
                except MCPError as exc:
                    if exc.code == CONNECTION_CLOSED:
                        self.break_(self.fault.message or "the connection to the server closed")
                    else:
                        error = f"the server answered with an error: {exc.error.message}"
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self.break_(f"the connection to the server broke: {exc}")
                except ValidationError as exc:
                    # Well-formed JSON-RPC, but not an MCP result: like garbage, the server is restarted.
                    error = f"the server's result is not a valid MCP result: {_invalid_result(exc)}"
                    self.break_(error)
            timed_out = timer.cancelled_caught
            nursery.cancel_scope.cancel()
        wall = trio.current_time() - started
        if outcome is not None:
            if all(getattr(block, "type", None) == "text" for block in outcome.content):
                return _from_call_result(outcome, self, wall)
            # Images and the like: checking and copying megabytes of base64 stays off the event loop.
            return await trio.to_thread.run_sync(_from_call_result, outcome, self, wall)
        if timed_out:
            self.break_(f"no answer within {timeout_s:g}s")
            return _result(self, "timeout", f"killed after {timeout_s:g}s timeout: the server did not answer", wall)
        if error is not None:
            return _result(self, "error", error, wall)
        self.break_(self.fault.message or "the server stopped")
        # Give the sandbox a moment to be reaped, so the message can say how it ended.
        with trio.move_on_after(0.5):
            await self.session.exited.wait()
        return _result(self, "error", f"the MCP server failed during the call: {self.failure()}", wall)

    async def _broken_or_fault(self) -> None:
        async with trio.open_nursery() as nursery:
            for event in (self.broken, self.fault.event, self.session.exited):
                nursery.start_soon(_wait_then_cancel, event, nursery.cancel_scope)


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _result(
    conn: Connection, status: str, message: str, wall: float, output: Any = None, content: tuple[Any, ...] | None = None
) -> sandbox.Result:
    return sandbox.Result(
        status=status,  # type: ignore[arg-type]
        output=output,
        stderr_tail=conn.session.stderr_tail(),
        exit_code=None,
        signal=None,
        wall_time_s=round(wall, 6),
        cpu_time_s=0.0,
        peak_memory_bytes=0,
        truncated=False,
        backend=f"mcp+{conn.session.backend}",
        message=message,
        content=content,
    )


def _invalid_result(exc: Any) -> str:
    """What is wrong with a result the SDK refused, in our words where we know them (a pydantic ValidationError)."""
    for problem in exc.errors():
        loc = problem.get("loc", ())
        # A block whose type matches none of the union's members: every member reports its "type".
        if (len(loc) >= 4 and loc[0] == "content" and loc[-1] == "type"
                and problem.get("type") == "literal_error" and isinstance(problem.get("input"), str)):
            shown = repr(problem["input"])[:40]
            return f"content[{loc[1]}]: unknown block type {shown} (known: {', '.join(mcp_content.KINDS)})"
    first = exc.errors()[0] if exc.error_count() else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "result"
    return f"{where}: {first.get('msg', 'invalid')} ({exc.error_count()} problems)"


def _from_call_result(outcome: Any, conn: Connection, wall: float) -> sandbox.Result:
    """An MCP CallToolResult as a Result.

    One text block is the output (its JSON when it is JSON, what most servers print;
    else ``{"text": ...}``), or the structured content when given.  Anything else (an
    image, audio, a resource, several blocks) passes through as content blocks, checked
    like our own tools' (engine/protocol/content.py): the output is then the structured
    content, else the blocks' text.  Blocks that break the contract end the call as an
    error naming the problem.
    """
    blocks = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in outcome.content]
    if getattr(outcome, "is_error", False):
        text = " ".join(block.get("text", "") for block in blocks if block.get("type") == "text").strip()
        return _result(conn, "error", f"the tool reported an error: {text[:500] or '(no text)'}", wall)
    structured = getattr(outcome, "structured_content", None)
    if len(blocks) == 1 and blocks[0].get("type") == "text" or not blocks:
        if structured is not None:
            return _result(conn, "ok", "ok", wall, structured)
        if not blocks:
            return _result(conn, "ok", "ok", wall, None)
        try:
            output: Any = json.loads(blocks[0]["text"])
        except ValueError:
            output = {"text": blocks[0]["text"]}
        return _result(conn, "ok", "ok", wall, output)
    try:
        checked = mcp_content.check_blocks(blocks)
    except mcp_content.ContentError as exc:
        return _result(conn, "error", f"the server's result broke the content rules: {exc}", wall)
    output = dict(structured) if structured is not None else mcp_content.text_output(checked)
    return _result(conn, "ok", "ok", wall, output, checked)


async def _list_tools(client: Any) -> dict[str, Definition]:
    found: dict[str, Definition] = {}
    cursor = None
    for _ in range(100):  # pages; a server paging forever is not ready
        import mcp_types as types

        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await client.list_tools(params=params)
        for tool in page.tools:
            found[tool.name] = Definition(tool.description or "", dict(tool.input_schema or {}))
        cursor = page.next_cursor
        if not cursor:
            return found
    raise StartFailed("the server's tools/list did not end after 100 pages")


@contextlib.asynccontextmanager
async def open_connection(
    command: tuple[str, ...], spec: sandbox.Spec, *, startup_timeout_s: float
) -> AsyncIterator[Connection]:
    """Start, initialise and list; yield the ready Connection; kill the server on exit."""
    from mcp.client.session import ClientSession
    from mcp.shared.exceptions import MCPError
    from mcp_types import Implementation

    spec = attrs.evolve(spec, argv=command, python=None)  # type: ignore[arg-type]  # attrs: converter=tuple
    started = trio.current_time()
    fault = Fault()
    with single_errors():
        async with sandbox.open_session(spec) as session:
            async with mcp_streams(session, max_message_bytes=spec.max_output_bytes + _MESSAGE_SLACK, fault=fault) as (
                read,
                write,
            ):
                client = ClientSession(read, write, client_info=Implementation(name="scalytics-connect", version="1"))
                async with client:
                    tools: dict[str, Definition] | None = None
                    problem = "did not start"
                    with trio.move_on_after(startup_timeout_s) as timer:
                        async with trio.open_nursery() as nursery:

                            async def watch() -> None:
                                async with trio.open_nursery() as inner:
                                    inner.start_soon(_wait_then_cancel, fault.event, inner.cancel_scope)
                                    inner.start_soon(_wait_then_cancel, session.exited, inner.cancel_scope)
                                nursery.cancel_scope.cancel()

                            nursery.start_soon(watch)
                            try:
                                await client.initialize()
                                tools = await _list_tools(client)
                            except MCPError as exc:
                                problem = f"refused to start: {exc.error.message}"
                            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                                problem = f"its connection broke: {exc}"
                            nursery.cancel_scope.cancel()
                    if tools is None:
                        if timer.cancelled_caught:
                            reason = f"the MCP server did not start within {startup_timeout_s:g}s"
                        else:
                            with trio.move_on_after(0.5):
                                await session.exited.wait()
                            ended = session.exit_message()
                            reason = f"the MCP server {problem}: " + "; ".join(
                                part for part in (fault.message, f"server {ended}" if ended else None) if part
                            )
                        await session.kill()
                        raise StartFailed(reason.rstrip(": "), session.stderr_tail())
                    yield Connection(client, session, fault, tools, trio.current_time() - started)
