"""Hot reload: a dropped tool file appears and can be called; a broken file changes nothing; a removed tool ends
its pending approval."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from engine.audit import query
from engine.client import open_client
from engine.protocol import AgentAction, AgentResult, ErrorFrame, ToolCall, ToolList
from tests.engine.conftest import RunningServer

ECHO = """\
name: echo
description: Echo the text back (dropped in while the server runs).
permission_level: 0
command: [/bin/cat]
parameters:
  type: object
  properties: {text: {type: string}}
  required: [text]
sandbox: {timeout: 5s, isolation: process}
"""



async def _touch_later(path: Path) -> None:
    # Some filesystems keep mtimes in coarse steps: make sure the change is seen.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def test_a_dropped_tool_file_appears_and_runs(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            first = await client.next_event_of(ToolList)
            assert "echo" not in {t.name for t in first.tools}
            (config_dir / "tools.d" / "echo.yaml").write_text(ECHO)
            fresh = await client.next_event_of(ToolList)
            assert "echo" in {t.name for t in fresh.tools}
            result = await client.call_tool("echo", {"text": "hello"})
            assert str(result.status) == "ok" and result.output == {"text": "hello"}


async def test_a_broken_file_leaves_the_old_config_serving(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    calculator = config_dir / "tools.d" / "calculator.yaml"
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            calculator.write_text(calculator.read_text().replace("timeout: 5s", "timeout: 5 parsecs"))
            await _touch_later(calculator)
            with trio.fail_after(5):
                while not await _audited_reload(server, "error"):  # noqa: ASYNC110 (reads the database)
                    await trio.sleep(0.1)
            result = await client.call_tool("calculator", {"expression": "2+2"})
            assert str(result.status) == "ok" and result.output["result"] == 4
    [record] = [r for r in query(server.settings.state_dir, kind="config_reload") if r.outcome == "error"]
    errors = record.to_dict()["details"]["errors"]
    assert any("tools.d/calculator.yaml" in error and "parsecs" in error for error in errors)


async def _audited_reload(server: RunningServer, outcome: str) -> bool:
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="config_reload"))
    return any(r.outcome == outcome for r in records)


async def test_removing_a_tool_ends_its_pending_approval(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    tool = config_dir / "tools.d" / "echo.yaml"
    tool.write_text(ECHO.replace("permission_level: 0", "permission_level: 1"))
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            await client.send(ToolCall(id="e1", name="echo", arguments={"text": "never"}))
            action = await client.next_event_of(AgentAction)
            assert action.requires_approval
            tool.unlink()
            seen: dict[type, object] = {}
            while len(seen) < 2:
                event = await client.next_event()
                if isinstance(event, AgentResult | ToolList):
                    seen[type(event)] = event
            result, fresh = seen[AgentResult], seen[ToolList]
            assert str(result.status) == "cancelled" and "removed" in result.output["error"]  # type: ignore[attr-defined]
            assert "echo" not in {t.name for t in fresh.tools}  # type: ignore[attr-defined]
            # Approving it now is refused, and nothing runs.
            await client.answer(action.action_id, True)
            event = await client.next_event_of(ErrorFrame)
            assert event.code == "already_decided"
