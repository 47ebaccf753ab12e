"""Remembering an approval from an MCP client's elicitation (both protocol revisions):

- the form offers "Remember" (this call only, 15m, 1h, 8h); answering 1h makes a grant,
  and the same call again runs without asking;
- where the policy refuses to remember (``secretive``: ``remember: never``) the answer
  still approves this one call, nothing is remembered, and the next call asks again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from engine.client import open_client
from tests.mcp.conftest import MODES, McpServer, mcp_client
from tests.mcp.conftest import start_mcp as start_mcp  # noqa: F401 - fixtures

pytest.importorskip("mcp", reason="the MCP SDK is the optional extra 'mcp'")
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.mark.parametrize("mode", MODES)
async def test_an_elicitation_can_remember_the_approval(start_mcp, config_dir: Path, mode: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import mcp_types as types

    server: McpServer = await start_mcp(config_dir)
    asked: list[Any] = []

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.requested_schema)
        return types.ElicitResult(action="accept", content={"approve": True, "remember": "1h"})

    with trio.fail_after(40):
        async with mcp_client(server.mcp, server.token(), mode=mode, elicitation_callback=elicit) as client:
            first = await client.call_tool("note", {"path": "a.txt"})
            second = await client.call_tool("note", {"path": "a.txt"})
            assert not first.is_error and not second.is_error
            assert len(asked) == 1
            assert asked[0]["properties"]["remember"]["enum"] == ["this call only", "15m", "1h", "8h"]
            # Never remembered by policy: approved once, asked again.
            refused = await client.call_tool("secretive", {"path": "a.txt"})
            again = await client.call_tool("secretive", {"path": "a.txt"})
            assert not refused.is_error and not again.is_error
            assert len(asked) == 3
        async with open_client(server.url, server.token()) as alice:
            [grant] = (await alice.list_grants()).grants
            assert (grant.name, grant.scope, grant.made_by) == ("note", "duration", "alice")
            assert 3500 < grant.expires_in_s <= 3600
