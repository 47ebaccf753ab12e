"""A small MCP server for the tests (stdlib + the `mcp` SDK's low-level Server), over stdio.

Tools: `echo`, `add`, `counter` (state kept for the process's life), `instance` (an id
made at start-up: tells one process from another), `fail` (an error result), `crash`
(the process exits mid-call), `garbage` (prints a line that is not JSON-RPC on stdout),
`hang` (never answers), `secret_env` (returns the environment: must never be exposed),
`picture` (a text and an image block), `bad_picture` (an image block that is not base64),
`odd_block` (a block of a type MCP does not have, written raw).

Options:
  --descriptions FILE   JSON object {tool: description} read at every start, overriding
                        the built-in descriptions (how a test changes a tool after pinning)
  --delay-file FILE     sleep as many seconds as FILE says before serving, when it exists
                        (a server that starts too slowly, until the test says otherwise)
  --start-file FILE     append one line to FILE at every start (tests count starts)
  --calls-file FILE     append the tool's name to FILE at every call (a call is in flight)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

INSTANCE = uuid.uuid4().hex
COUNTER = [0]

_OBJECT = {"type": "object"}
TOOLS = {
    "echo": ("Echo the text back.", {"type": "object", "properties": {"text": {"type": "string"}},
                                     "required": ["text"], "additionalProperties": False}),
    "add": ("Add two integers.", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                  "required": ["a", "b"], "additionalProperties": False}),
    "counter": ("Count the calls made to this server process.", _OBJECT),
    "instance": ("An id made when this server process started.", _OBJECT),
    "fail": ("Always answers with an error result.", _OBJECT),
    "crash": ("Exits the server process in the middle of the call.", _OBJECT),
    "garbage": ("Prints a line that is not JSON-RPC on stdout.", _OBJECT),
    "hang": ("Never answers.", _OBJECT),
    "secret_env": ("Returns the server's environment.", _OBJECT),
    "picture": ("A caption and a 1x1 PNG, as content blocks.", _OBJECT),
    "bad_picture": ("An image block whose data is not base64.", _OBJECT),
    "odd_block": ("Answers with a block of a type MCP does not have (written raw).", _OBJECT),
}
# A 1x1 red PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--descriptions")
    parser.add_argument("--delay-file")
    parser.add_argument("--start-file")
    parser.add_argument("--calls-file")
    options = parser.parse_args()
    descriptions: dict[str, str] = {}
    if options.descriptions and os.path.exists(options.descriptions):
        with open(options.descriptions) as handle:
            descriptions = json.load(handle)
    if options.start_file:
        with open(options.start_file, "a") as handle:
            handle.write(f"{INSTANCE}\n")
    if options.delay_file and os.path.exists(options.delay_file):
        with open(options.delay_file) as handle:
            time.sleep(float(handle.read().strip() or 0))
    wire = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", write_through=True)

    async def list_tools(ctx: object, params: object) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=descriptions.get(name, text), input_schema=schema)
                for name, (text, schema) in TOOLS.items()
            ]
        )

    def text(value: object) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))])

    async def call_tool(ctx: object, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        name = params.name
        if options.calls_file:
            with open(options.calls_file, "a") as handle:
                handle.write(f"{name}\n")
        if name == "echo":
            return text({"text": arguments["text"]})
        if name == "add":
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(arguments["a"] + arguments["b"]))],
                structured_content={"sum": arguments["a"] + arguments["b"]},
            )
        if name == "counter":
            COUNTER[0] += 1
            return text({"count": COUNTER[0]})
        if name == "instance":
            return text({"instance": INSTANCE})
        if name == "fail":
            return types.CallToolResult(
                content=[types.TextContent(type="text", text="the upstream tool failed on purpose")], is_error=True
            )
        if name == "crash":
            print("crashing on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        if name == "garbage":
            wire.write("this is not JSON-RPC\n")
            wire.flush()
            await anyio.sleep_forever()
        if name == "hang":
            print("hanging on purpose", file=sys.stderr, flush=True)
            await anyio.sleep_forever()
        if name == "picture":
            return types.CallToolResult(content=[
                types.TextContent(type="text", text="a red dot"),
                types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            ])
        if name == "bad_picture":
            return types.CallToolResult(
                content=[types.ImageContent(type="image", data="not*base64", mime_type="image/png")]
            )
        if name == "odd_block":
            # The SDK would refuse to send this: write the answer to this request ourselves.
            answer = {"jsonrpc": "2.0", "id": ctx.request_id,  # type: ignore[attr-defined]
                      "result": {"content": [{"type": "video", "data": PNG_B64, "mimeType": "video/mp4"}]}}
            wire.write(json.dumps(answer) + "\n")
            wire.flush()
            await anyio.sleep_forever()
        if name == "secret_env":
            return text(dict(os.environ))
        raise ValueError(f"unknown tool {name!r}")

    server = Server("sconnect-test-upstream", on_list_tools=list_tools, on_call_tool=call_tool)

    async def serve() -> None:
        stdin = anyio.wrap_file(io.TextIOWrapper(os.fdopen(0, "rb", closefd=False), encoding="utf-8"))
        async with stdio_server(stdin=stdin, stdout=anyio.wrap_file(wire)) as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


if __name__ == "__main__":
    main()
