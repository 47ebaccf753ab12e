"""Approvals over MCP: level 1 in-band (elicitation) or like level 2; level 2 by an admin on the WebSocket side.

A held call gets progress keep-alives; past its budget it answers "call again", and a
retry with the same arguments attaches to the same pending action and gets its outcome
exactly once (a further retry is a new action).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction
from tests.mcp.conftest import MODES, McpServer, mcp_client, wait_until

ECHO = """\
name: echo{level}
description: Echo the text back (level {level}, test tool).
permission_level: {level}
command: [/bin/cat]
parameters:
  type: object
  properties: {{text: {{type: string}}}}
  required: [text]
sandbox: {{timeout: 5s, isolation: process}}
"""


@pytest.fixture
def echo_config(config_dir: Path) -> Path:
    for level in (1, 2):
        (config_dir / "tools.d" / f"echo{level}.yaml").write_text(ECHO.format(level=level))
    return config_dir


async def _approve_next(admin: Any, name: str, approved: bool = True) -> str:
    """The admin (a real WebSocket client) answers the next pending action on ``name``."""
    while True:
        frame = await admin.next_event()
        if isinstance(frame, AgentAction) and frame.name == name and frame.requires_approval:
            await admin.answer(frame.action_id, approved, None if approved else "not today")
            return frame.action_id


@pytest.mark.parametrize("mode", MODES)
async def test_level_2_is_approved_by_a_websocket_admin_while_the_call_is_held(
    start_mcp, echo_config: Path, mode: str  # type: ignore[no-untyped-def]
) -> None:
    server: McpServer = await start_mcp(echo_config)
    with trio.fail_after(30):
        async with open_client(server.url, server.token("boss", ("admin",))) as admin, \
                mcp_client(server.mcp, server.token(), mode=mode) as client:
            async with trio.open_nursery() as nursery:
                approved: list[str] = []

                async def approve() -> None:
                    approved.append(await _approve_next(admin, "echo2"))
                    # It showed in the admin's action_list like any pending action... until answered.

                nursery.start_soon(approve)
                result = await client.call_tool("echo2", {"text": "held"})
    assert not result.is_error and result.structured_content == {"text": "held"}, result
    records = [r for r in query(server.settings.state_dir) if r.target == "echo2"]
    [approval] = [r for r in records if r.kind == "approval"]
    assert (approval.outcome, approval.approver) == ("approved", "boss")
    assert {r.to_dict()["details"]["transport"] for r in records} == {"mcp-http"}


async def test_a_pending_action_shows_in_the_admins_action_list(start_mcp, echo_config: Path) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(echo_config)
    with trio.fail_after(30):
        async with open_client(server.url, server.token("boss", ("admin",))) as admin, \
                mcp_client(server.mcp, server.token()) as client:
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def call() -> None:
                    outcome.append(await client.call_tool("echo2", {"text": "listed"}))

                nursery.start_soon(call)
                while True:
                    listed = await admin.list_actions()
                    mine = [a for a in listed.actions if a.name == "echo2"]
                    if mine:
                        break
                    await trio.sleep(0.02)
                assert (mine[0].requester, mine[0].level) == ("alice", 2)
                await admin.answer(mine[0].action_id, False, "not today")
    [result] = outcome
    assert result.is_error and "denied by boss: not today" in result.content[0].text


async def test_past_the_budget_a_retry_attaches_and_gets_the_outcome_once(start_mcp, echo_config: Path) -> None:  # type: ignore[no-untyped-def]
    server: McpServer = await start_mcp(echo_config, mcp_approval_wait_s=1.0)
    beats: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        beats.append(message or "")

    with trio.fail_after(30):
        async with open_client(server.url, server.token("boss", ("admin",))) as admin, \
                mcp_client(server.mcp, server.token()) as client:
            first = await client.call_tool("echo2", {"text": "later"}, progress_callback=progress)
            assert first.is_error and first.structured_content["status"] == "pending"
            action_id = first.structured_content["action_id"]
            text = first.content[0].text
            assert f"waiting for an admin's approval, action {action_id}; call again with the same arguments" in text
            assert beats and all("waiting for an admin's approval" in beat for beat in beats)
            # The admin approves while nobody waits on the MCP side; the action runs.
            assert await _approve_next(admin, "echo2") == action_id
            await wait_until(lambda: query(server.settings.state_dir, kind="execution", tool="echo2"))
            again = await client.call_tool("echo2", {"text": "later"})
            assert not again.is_error and again.structured_content == {"text": "later"}
            # Exactly once: the next identical call is a new action.
            third = await client.call_tool("echo2", {"text": "later"})
            assert third.is_error and third.structured_content["action_id"] != action_id
    assert len([r for r in query(server.settings.state_dir, kind="execution") if r.target == "echo2"]) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_level_1_is_asked_in_band_when_the_client_can_answer(start_mcp, echo_config: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    """2025-11-25: an elicitation request on the session; 2026-07-28: an input_required round trip."""
    import mcp_types as types

    server: McpServer = await start_mcp(echo_config)
    asked: list[str] = []
    answer = {"approve": True}

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content=answer)

    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token(), mode=mode, elicitation_callback=elicit) as client:
            yes = await client.call_tool("echo1", {"text": "ok?"})
            answer["approve"] = False
            no = await client.call_tool("echo1", {"text": "not this"})
    assert not yes.is_error and yes.structured_content == {"text": "ok?"}
    assert no.is_error and "denied by alice" in no.content[0].text
    assert len(asked) == 2 and "echo1" in asked[0]
    approvals = [r for r in query(server.settings.state_dir, kind="approval") if r.target == "echo1"]
    assert [(r.outcome, r.approver) for r in approvals] == [("approved", "alice"), ("denied", "alice")]


async def test_level_1_without_in_band_support_waits_for_the_user_elsewhere(start_mcp, echo_config: Path) -> None:  # type: ignore[no-untyped-def]
    """The stateless revision has no back-channel: the user approves from the WebSocket side (chat)."""
    server: McpServer = await start_mcp(echo_config)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as same_user, \
                mcp_client(server.mcp, server.token(), mode="2026-07-28") as client:
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def call() -> None:
                    outcome.append(await client.call_tool("echo1", {"text": "from chat"}))

                nursery.start_soon(call)
                while True:
                    mine = [a for a in (await same_user.list_actions()).actions if a.name == "echo1"]
                    if mine:
                        break
                    await trio.sleep(0.02)
                await same_user.answer(mine[0].action_id, True)
    [result] = outcome
    assert not result.is_error and result.structured_content == {"text": "from chat"}


async def test_a_forged_request_state_answers_nothing(start_mcp, echo_config: Path) -> None:  # type: ignore[no-untyped-def]
    """2026-07-28 by hand: the approval form comes back as input_required; a retry with a made-up state is refused."""
    import mcp_types as types
    from mcp.shared.exceptions import MCPError

    server: McpServer = await start_mcp(echo_config)

    async def elicit(context: Any, params: Any) -> types.ElicitResult:  # declares the capability; never called
        raise AssertionError("the stateless revision has no back-channel")

    yes = {"sconnect_approval": types.ElicitResult(action="accept", content={"approve": True})}
    with trio.fail_after(30):
        async with mcp_client(server.mcp, server.token(), mode="2026-07-28", elicitation_callback=elicit) as client:
            first = await client.session.call_tool("echo1", {"text": "x"}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            form = first.input_requests["sconnect_approval"]
            assert "echo1" in form.params.message
            with pytest.raises(MCPError) as forged:
                await client.session.call_tool("echo1", {"text": "x"}, input_responses=yes, request_state="forged",
                                               allow_input_required=True)
            assert forged.value.error.code == -32602
            # Nothing was approved by it: the action still waits.
            assert [a.name for a in (await _list(server)).actions] == ["echo1"]
            done = await client.session.call_tool("echo1", {"text": "x"}, input_responses=yes,
                                                  request_state=first.request_state, allow_input_required=True)
    assert isinstance(done, types.CallToolResult) and not done.is_error and done.structured_content == {"text": "x"}


async def _list(server: McpServer) -> Any:
    async with open_client(server.url, server.token()) as same_user:
        return await same_user.list_actions()
