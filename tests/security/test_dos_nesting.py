"""Deeply nested values cannot end anybody's connection (issue 11, item 4).

- test_deep_arguments_are_refused_and_admins_stay_connected: a user calls a level-2 tool
  whose free-form argument nests 600 lists (the attack: its agent_action used to be
  broadcast to every admin, whose frame encoder then failed and dropped the admin). The
  caller gets `too_large` naming the depth; the admin's connection stays up and answers a
  round trip; arguments 50 levels deep still reach the admin for approval.
- test_a_frame_that_cannot_be_encoded_is_an_error_for_that_frame: a tool prints JSON
  nested 600 deep; its result cannot be encoded, so the caller gets an `internal` error
  for that call and its connection carries on.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from engine.client import open_client
from engine.protocol import AgentAction, ErrorFrame
from tests.engine.conftest import RunningServer
from tests.security.conftest import reply_to

FREE_FORM_LEVEL_2 = """\
name: stash
description: Keep any JSON value (test tool, approved by an admin).
permission_level: 2
command: [/bin/cat]
parameters: {type: object}
"""

DEEP_OUTPUT = """\
name: deep_output
description: Prints JSON nested 600 levels deep (test tool).
permission_level: 0
command: [/usr/bin/python3, -c, "print('[' * 600 + ']' * 600)"]
parameters: {type: object}
sandbox: {isolation: process}
"""


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


async def test_deep_arguments_are_refused_and_admins_stay_connected(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "stash.yaml").write_text(FREE_FORM_LEVEL_2)
    server: RunningServer = await start_server(config_dir)
    with trio.fail_after(30):
        async with open_client(server.url, server.token("root-admin", ("admin", "user"))) as admin, \
                open_client(server.url, server.token("mallory")) as user:
            deep = json.dumps({"type": "tool_call", "id": "deep-1",
                               "payload": {"name": "stash", "arguments": {"v": nested(600)}}})
            await user.send_raw(deep)
            refused = await reply_to(user, "deep-1")
            assert isinstance(refused, ErrorFrame) and str(refused.code) == "too_large"
            assert "64 levels deep" in refused.message
            # The admin is still connected and served.
            assert "stash" in [tool.name for tool in (await admin.list_tools()).tools]
            # Moderately deep arguments are fine: the admin is asked to approve them.
            await user.send_raw(json.dumps({"type": "tool_call", "id": "ok-1",
                                            "payload": {"name": "stash", "arguments": {"v": nested(50)}}}))
            async for event in admin.events():
                if isinstance(event, AgentAction) and event.name == "stash":
                    assert event.arguments == {"v": nested(50)}
                    break
            assert (await admin.list_tools()).tools


async def test_a_frame_that_cannot_be_encoded_is_an_error_for_that_frame(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "deep_output.yaml").write_text(DEEP_OUTPUT)
    server: RunningServer = await start_server(config_dir)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            await client.send_raw(json.dumps({"type": "tool_call", "id": "call-1",
                                              "payload": {"name": "deep_output", "arguments": {}}}))
            answer = await reply_to(client, "call-1")
            while isinstance(answer, AgentAction):  # the action is announced first
                answer = await reply_to(client, "call-1")
            assert isinstance(answer, ErrorFrame) and str(answer.code) == "internal"
            assert "could not be encoded" in answer.message
            assert (await client.list_tools()).tools  # the connection carries on
