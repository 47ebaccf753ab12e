"""MCP over a sandboxed program's stdio: newline-delimited JSON-RPC, as the SDK's own
stdio transport speaks it, but on a `sandbox.Session` instead of a bare subprocess.

The SDK's `stdio_client` starts its own (unsandboxed) process and logs a line it cannot
parse and carries on. Here a line that is not JSON-RPC, or one longer than the limit,
is a fault of the server: it is recorded in `Fault` and the stream ends, so the session
stops and the call in flight fails with that reason instead of waiting for an answer
that may never come. EOF on stdout (the server exited) ends the stream the same way.

Cancellation: leaving the context cancels both pipe tasks; the sandbox session itself
is owned (and killed) by the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

import sandbox

_READ_CHUNK = 65536


@attrs.define(eq=False)
class Fault:
    """The first thing the server did wrong on the wire, if any; `event` fires with it."""

    message: str | None = None
    event: trio.Event = attrs.Factory(trio.Event)

    def set(self, message: str) -> None:
        if self.message is None:
            self.message = message
        self.event.set()


@contextlib.asynccontextmanager
async def mcp_streams(
    session: sandbox.Session, *, max_message_bytes: int, fault: Fault
) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) for `mcp.ClientSession`, over `session`'s pipes."""
    import anyio
    import mcp_types as types
    from mcp.shared.message import SessionMessage

    read_send, read_receive = anyio.create_memory_object_stream[Any](0)
    write_send, write_receive = anyio.create_memory_object_stream[Any](0)

    async def reader() -> None:
        async with read_send:
            buffer = bytearray()
            while True:
                try:
                    chunk = await session.stdout.receive_some(_READ_CHUNK)
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    chunk = b""
                if not chunk:
                    fault.set("the server closed its stdout")
                    return
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except ValueError:
                        shown = line[:120].decode("utf-8", "replace")
                        fault.set(f"the server printed something that is not JSON-RPC on stdout: {shown!r}")
                        return
                    try:
                        await read_send.send(SessionMessage(message))
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                if len(buffer) > max_message_bytes:
                    fault.set(f"the server sent a message larger than {max_message_bytes} bytes")
                    return

    async def writer() -> None:
        async with write_receive:
            async for item in write_receive:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                try:
                    await session.stdin.send_all(data.encode())
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    fault.set("the server closed its stdin")
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)
        try:
            yield read_receive, write_send
        finally:
            nursery.cancel_scope.cancel()
