"""Tools that return MCP content blocks: over MCP (HTTP and the stdio bridge's server side),
over the WebSocket (``agent_result.content``, ``output`` still the text), audited by digest.

The contract's checks (engine/protocol/content.py) are exercised directly for each bad
input, then end to end through a real sandboxed tool that prints such output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.config import load_config
from engine.errors import ConfigError
from engine.protocol import content as contract
from engine.protocol import encode
from engine.protocol._schema import validator_for
from tests.mcp.conftest import McpServer, mcp_client


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(
        b"IEND", b""
    )


PNG = _png()
PNG_B64 = base64.b64encode(PNG).decode()
LARGE = bytes(range(256)) * (6 * 1024)  # 1.5 MiB
OVERSIZE_B64 = "A" * (4 * ((contract.MAX_BLOCK_BYTES + 2) // 3) + 4)

# What the test tool prints for each `kind` (the tool reads this table from its own copy).
OUTPUTS: dict[str, Any] = {
    "picture": {"content": [{"type": "text", "text": "a red dot"},
                            {"type": "image", "data": PNG_B64, "mimeType": "image/png"}]},
    "structured": {"content": [{"type": "image", "data": PNG_B64, "mimeType": "image/png"}],
                   "structuredContent": {"width": 1, "height": 1}},
    "unknown_type": {"content": [{"type": "video", "data": PNG_B64, "mimeType": "video/mp4"}]},
    "bad_base64": {"content": [{"type": "image", "data": "not*base64", "mimeType": "image/png"}]},
    "no_mime_type": {"content": [{"type": "audio", "data": PNG_B64}]},
    "oversize": {"content": [{"type": "image", "data": OVERSIZE_B64, "mimeType": "image/png"}]},
    "plain": "just text",
    # Larger than a WebSocket frame's default limit (1 MiB), within the contract's (2 MiB).
    "large": {"content": [{"type": "image", "data": base64.b64encode(LARGE).decode(), "mimeType": "image/png"}]},
}
PROBLEMS = {
    "unknown_type": "content[0]: unknown block type 'video' (known: text, image, audio, resource, resource_link)",
    "bad_base64": "content[0] (image): data: not valid base64",
    "no_mime_type": "content[0] (audio): mimeType: missing field",
    "oversize": f"content[0] (image): data: must be at most {len(OVERSIZE_B64) - 4} characters",
    "plain": 'a tool with output: content must print {"content": [...]}, not plain text',
}

TOOL = """\
name: pictures
description: Prints MCP content blocks, good or bad (test tool).
permission_level: 0
python: pictures:run
output: content
parameters:
  type: object
  properties: {kind: {type: string}}
  required: [kind]
sandbox: {timeout: 10s, isolation: process, max_output: 4MiB, memory: 512MiB}
"""
MODULE = """\
import json, os

def run(kind):
    with open(os.path.join(os.path.dirname(__file__), "pictures.json")) as handle:
        return json.load(handle)[kind]
"""


@pytest.fixture
def config_with_pictures(config_dir: Path) -> Path:
    """A package ``pictures/`` (module and its table), bound into the sandbox as a whole."""
    tools = config_dir / "tools.d"
    package = tools / "pictures"
    package.mkdir()
    (package / "__init__.py").write_text(MODULE)
    (package / "pictures.json").write_text(json.dumps(OUTPUTS))
    for path in (package, package / "__init__.py", package / "pictures.json"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (tools / "pictures.yaml").write_text(TOOL)
    return config_dir


# --- the contract, directly ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unknown_type", "bad_base64", "no_mime_type", "oversize", "plain"])
def test_each_bad_output_is_a_clear_error(kind: str) -> None:
    with pytest.raises(contract.ContentError) as caught:
        contract.from_tool_output(OUTPUTS[kind])
    assert PROBLEMS[kind] in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ([], "content must be a non-empty list of blocks"),
        ([{"type": "text", "text": "x"}] * (contract.MAX_BLOCKS + 1), f"at most {contract.MAX_BLOCKS} are allowed"),
        ([7], "content[0]: a block must be an object, not int"),
        ([{"type": "text", "text": "x", "colour": "red"}], "content[0] (text): colour: unexpected field"),
        ([{"type": "image", "data": "AAAA", "mimeType": "png"}], "mimeType: must be a media type such as image/png"),
        ([{"type": "image", "data": "AAA", "mimeType": "image/png"}], "not valid base64"),
        ([{"type": "image", "data": "AA AA", "mimeType": "image/png"}], "not valid base64"),
        ([{"type": "resource", "resource": {"uri": "t://x", "text": "a", "blob": "AAAA"}}],
         "resource: needs exactly one of text and blob"),
        ([{"type": "resource", "resource": {"uri": "t://x", "blob": "!!!!"}}], "resource.blob: not valid base64"),
        ([{"type": "resource_link", "uri": "t://x"}], "content[0] (resource_link): name: missing field"),
        ([{"type": "image", "data": OVERSIZE_B64[: 4 * (contract.MAX_BLOCK_BYTES // 3)], "mimeType": "image/png"}] * 5,
         f"at most {contract.MAX_TOTAL_BYTES} are allowed"),
    ],
)
def test_bad_blocks(blocks: list[Any], problem: str) -> None:
    with pytest.raises(contract.ContentError) as caught:
        contract.check_blocks(blocks)
    assert problem in str(caught.value), str(caught.value)


def test_good_blocks_their_text_and_their_digests() -> None:
    blocks = contract.check_blocks([
        {"type": "text", "text": "hello"},
        {"type": "image", "data": PNG_B64, "mimeType": "image/png"},
        {"type": "audio", "data": base64.b64encode(b"\x80" * 2048).decode(), "mimeType": "audio/wav"},
        {"type": "resource", "resource": {"uri": "test://doc", "mimeType": "text/plain", "text": "body"}},
        {"type": "resource_link", "uri": "test://big", "name": "big", "mimeType": "application/pdf"},
    ])
    assert contract.summary(blocks).split("\n") == [
        "hello", f"[image/png, {len(PNG)} B]", "[audio/wav, 2 KiB]", "[resource test://doc, text/plain, 4 B]", "body",
        "[link test://big (big, application/pdf)]",
    ]
    image = contract.digests(blocks)[1]
    assert image == {"type": "image", "mime_type": "image/png", "bytes": len(PNG),
                     "sha256": hashlib.sha256(PNG).hexdigest()}


# --- end to end -----------------------------------------------------------------------------


async def test_an_image_over_mcp_with_its_digest_in_the_audit_log(start_mcp, config_with_pictures: Path) -> None:  # type: ignore[no-untyped-def]
    import mcp_types as types

    server: McpServer = await start_mcp(config_with_pictures)
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token()) as client:
            result = await client.call_tool("pictures", {"kind": "picture"})
            structured = await client.call_tool("pictures", {"kind": "structured"})
    assert not result.is_error, result
    text, image = result.content
    assert isinstance(text, types.TextContent) and text.text == "a red dot"
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data) == PNG
    assert result.structured_content is None  # the blocks' text is not passed off as structured content
    assert structured.structured_content == {"width": 1, "height": 1}
    assert isinstance(structured.content[0], types.ImageContent)

    executions = [r.to_dict() for r in query(server.settings.state_dir, kind="execution") if r.target == "pictures"]
    assert executions[0]["details"]["content"] == [
        {"type": "text", "bytes": 9, "sha256": hashlib.sha256(b"a red dot").hexdigest()},
        {"type": "image", "mime_type": "image/png", "bytes": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()},
    ]
    # Never the bytes themselves: the base64 is nowhere in the audit database.
    with sqlite3.connect(server.settings.state_dir / "audit.db") as db:
        dump = "\n".join(db.iterdump())
    assert PNG_B64 not in dump


async def test_a_tool_printing_bad_content_is_an_error_result(start_mcp, config_with_pictures: Path) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(config_with_pictures)
    kinds = ["unknown_type", "bad_base64", "no_mime_type", "oversize", "plain"]
    with trio.fail_after(60):
        async with mcp_client(server.mcp, server.token()) as client:
            results = {kind: await client.call_tool("pictures", {"kind": kind}) for kind in kinds}
            # The session carries on.
            assert not (await client.call_tool("pictures", {"kind": "picture"})).is_error
    for kind, result in results.items():
        assert result.is_error, kind
        assert PROBLEMS[kind] in result.content[0].text, (kind, result.content[0].text)
    outcomes = [r.outcome for r in query(server.settings.state_dir, kind="execution") if r.target == "pictures"]
    assert sorted(outcomes) == ["error"] * len(kinds) + ["ok"], outcomes


async def test_the_websocket_result_carries_the_blocks_and_the_text(  # type: ignore[no-untyped-def]
    start_mcp, config_with_pictures: Path
) -> None:
    server: McpServer = await start_mcp(config_with_pictures)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            result = await client.call_tool("pictures", {"kind": "picture"})
    assert str(result.status) == "ok"
    # What an older client reads: the text, and a line for the image.
    assert result.output == {"text": f"a red dot\n[image/png, {len(PNG)} B]"}
    assert result.content == OUTPUTS["picture"]["content"]
    frame = json.loads(encode(result))
    assert list(validator_for("agent_result.server").iter_errors(frame)) == []


async def test_a_large_image_reaches_a_websocket_client(start_mcp, config_with_pictures: Path) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(config_with_pictures)
    with trio.fail_after(60):
        async with open_client(server.url, server.token()) as client:
            result = await client.call_tool("pictures", {"kind": "large"})
    assert str(result.status) == "ok", result.output
    assert result.content is not None
    assert base64.b64decode(result.content[0]["data"]) == LARGE
    assert result.output == {"text": "[image/png, 1.5 MiB]"}


@pytest.mark.slow
async def test_blocks_pass_through_the_stdio_bridge(start_mcp, config_with_pictures: Path) -> None:  # type: ignore[no-untyped-def]
    import mcp_types as types

    from tests.mcp.test_stdio_bridge import bridged

    server: McpServer = await start_mcp(config_with_pictures, mcp_port=None)
    with trio.fail_after(60):
        async with bridged(server, server.token()) as client:
            result = await client.call_tool("pictures", {"kind": "picture"})
            large = await client.call_tool("pictures", {"kind": "large"})
            bad = await client.call_tool("pictures", {"kind": "bad_base64"})
    assert not result.is_error and [type(block) for block in result.content] == [types.TextContent, types.ImageContent]
    assert base64.b64decode(result.content[1].data) == PNG
    assert base64.b64decode(large.content[0].data) == LARGE
    assert bad.is_error and PROBLEMS["bad_base64"] in bad.content[0].text


async def test_the_chat_shows_a_line_per_block(start_mcp, config_with_pictures: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import sys

    from tests.conftest import REPO

    server: McpServer = await start_mcp(config_with_pictures, mcp_port=None)
    env = {k: v for k, v in os.environ.items() if k not in ("SCONNECT_TOKEN", "NO_COLOR")}
    env.update(PYTHONPATH=str(REPO), SCONNECT_TOKEN=server.token())
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "engine", "chat", "--url", server.url],
            stdin=b'/call pictures {"kind": "picture"}\n/call pictures {"kind": "large"}\n/quit\n',
            capture_stdout=True, capture_stderr=True, check=False, cwd=REPO, env=env,
        )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert f"[result] pictures ok\n  a red dot\n  [image/png, {len(PNG)} B]\n" in out, out
    assert "[result] pictures ok\n  [image/png, 1.5 MiB]\n" in out, out
    assert PNG_B64 not in out


# --- the tool file ---------------------------------------------------------------------------

ECHO_BLOCKS = """\
name: said
description: A command tool printing a content block (test tool).
permission_level: 0
command: [/bin/echo, '{"content": [{"type": "text", "text": "said so"}]}']
output: content
parameters: {type: object}
sandbox: {timeout: 5s, isolation: process}
"""
OUTPUT_MISTAKES = {
    "pictures": ("name: p\ndescription: x\npermission_level: 0\ncommand: [/bin/true]\noutput: pictures\n"
                 "parameters: {type: object}\n",
                 "tools.d/p.yaml:5:9: output: 'pictures' is not one of 'json', 'content'"),
    "chain": ("name: p\ndescription: x\npermission_level: 0\nchain:\n  - tool: calculator\noutput: content\n"
              "parameters: {type: object}\n",
              "tools.d/p.yaml:6:1: output: 'output' applies to command and python tools only"),
    "mcp_server": ("name: p\ndescription: x\noutput: content\nmcp_server:\n  command: [/bin/false]\n"
                   "  tools:\n    t: {permission_level: 0}\n",
                   "tools.d/p.yaml:3:1: output: 'output' applies to command and python tools only"),
}


@pytest.mark.parametrize("mistake", sorted(OUTPUT_MISTAKES))
def test_output_mistakes_in_a_tool_file(config_dir: Path, mistake: str) -> None:
    text, message = OUTPUT_MISTAKES[mistake]
    (config_dir / "tools.d" / "p.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert message in str(caught.value), str(caught.value)


async def test_a_command_tool_prints_content_too(start_mcp, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "said.yaml").write_text(ECHO_BLOCKS)
    assert load_config(config_dir).tools["said"].output == "content"
    server: McpServer = await start_mcp(config_dir)
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token()) as client:
            result = await client.call_tool("said", {})
    assert not result.is_error and result.content[0].text == "said so"
    assert result.structured_content is None


def test_tools_run_json_carries_the_blocks(config_dir: Path, state_dir: Path) -> None:
    """`sconnect tools run --json` gives the content blocks beside the text in `output`."""
    from tests.cli.test_commands import sconnect

    (config_dir / "tools.d" / "said.yaml").write_text(ECHO_BLOCKS)
    done = sconnect("tools", "run", "said", "--args", "{}", "--json", "--config", str(config_dir),
                    "--state-dir", str(state_dir / "state"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["content"] == [{"type": "text", "text": "said so"}]
    assert result["output"] == {"text": "said so"}


CHAIN_TO_BLOCKS = """\
name: then_said
description: A chain whose last step returns content blocks (test tool).
permission_level: 0
chain:
  - tool: calculator
    arguments: {expression: "1+1"}
  - tool: said
parameters: {type: object}
"""


def test_a_chain_returns_its_last_steps_blocks(config_dir: Path, state_dir: Path) -> None:
    """A chain's result is its last step's: content blocks included, by digest in the audit."""
    from engine.audit import query
    from tests.cli.test_commands import sconnect

    (config_dir / "tools.d" / "said.yaml").write_text(ECHO_BLOCKS)
    (config_dir / "tools.d" / "then_said.yaml").write_text(CHAIN_TO_BLOCKS)
    state = state_dir / "state"
    done = sconnect("tools", "run", "then_said", "--args", "{}", "--json", "--config", str(config_dir),
                    "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["content"] == [{"type": "text", "text": "said so"}] and result["output"] == {"text": "said so"}
    [chain_run] = [r for r in query(state) if r.kind == "execution" and r.target == "then_said"]
    assert json.loads(chain_run.details)["content"][0]["type"] == "text"
