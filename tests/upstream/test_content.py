"""An MCP server's content blocks pass through as they are, checked like our own tools':
an image arrives as a block (the output is then its text), one whose data is not base64
ends the call as an error naming the block."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
import trio

from engine.config import load_config
from engine.toolrun import run_tool
from tests.upstream.conftest import MakeConfig
from tests.upstream.env import DEFAULT_TOOLS

pytestmark = pytest.mark.slow

TOOLS = DEFAULT_TOOLS + "".join(
    f"    {name}: {{permission_level: 0}}\n" for name in ("picture", "bad_picture", "odd_block")
)


async def test_image_blocks_pass_through_and_bad_ones_are_refused(mcp_config: MakeConfig, tag: str) -> None:
    config = load_config(mcp_config(lifecycle="shared", tools=TOOLS))
    work = Path("/tmp") / f"sconnect-{tag}"
    work.mkdir(mode=0o711)
    try:
        with trio.fail_after(60):
            good = await run_tool(config.tools["up_picture"], {}, workspace=work, work_root=work, subject="alice")
            bad = await run_tool(config.tools["up_bad_picture"], {}, workspace=work, work_root=work, subject="alice")
            odd = await run_tool(config.tools["up_odd_block"], {}, workspace=work, work_root=work, subject="alice")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert good.status == "ok", good.message
    assert good.content is not None
    text, image = good.content
    assert text == {"type": "text", "text": "a red dot"}
    assert image["type"] == "image" and image["mimeType"] == "image/png"
    png = base64.b64decode(image["data"])
    assert png.startswith(b"\x89PNG")
    assert good.output == {"text": f"a red dot\n[image/png, {len(png)} B]"}
    assert bad.status == "error" and bad.content is None
    assert "content[0] (image): data: not valid base64" in bad.message, bad.message
    assert odd.status == "error" and odd.content is None
    assert "content[0]: unknown block type 'video'" in odd.message, odd.message
