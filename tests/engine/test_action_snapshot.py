"""One call, one configuration: a reload while an action waits for its approval changes nothing for it.

The test holds a level-2 call pending, changes the policy files (a reload with a new
revision is audited), then approves: the call's decision, approval and execution
records all name the revision the call started with.
"""

from __future__ import annotations

from pathlib import Path

import trio

from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction, AgentResult, ToolCall
from tests.engine.conftest import RunningServer

ECHO = """\
name: echo
description: Echo the text back (admin approval).
permission_level: 2
command: [/bin/cat]
parameters:
  type: object
  properties: {text: {type: string}}
  required: [text]
sandbox: {timeout: 5s, isolation: process}
"""


async def _reloaded(server: RunningServer) -> list[str]:
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="config_reload"))
    return [r.policy_revision for r in records if r.outcome == "ok"]


async def test_a_reload_during_an_approval_does_not_change_the_calls_revision(  # type: ignore[no-untyped-def]
    start_server, config_dir: Path
) -> None:
    (config_dir / "tools.d" / "echo.yaml").write_text(ECHO)
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    policy = config_dir / "policies" / "default.yaml"
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("boss", ("admin",))) as admin:
            await alice.send(ToolCall(id="c1", name="echo", arguments={"text": "hi"}))
            action = await alice.next_event_of(AgentAction)
            assert action.requires_approval
            policy.write_text(policy.read_text().replace("Levels 0-2 are allowed", "Levels 0 to 2 are allowed"))
            with trio.fail_after(10):
                while not await _reloaded(server):  # noqa: ASYNC110  (the audit log sends no event)
                    await trio.sleep(0.05)
            await admin.answer(action.action_id, True)
            result = await alice.next_event_of(AgentResult)
            assert str(result.status) == "ok", result
    [new_revision] = await _reloaded(server)
    records = [r for r in query(server.settings.state_dir) if r.target == "echo"]
    kinds = {r.kind for r in records}
    assert {"decision", "approval", "execution"} <= kinds
    revisions = {r.policy_revision for r in records}
    assert len(revisions) == 1 and new_revision not in revisions
