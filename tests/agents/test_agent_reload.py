"""Hot reload of a custom agent's module: a changed module serves the next turn; a broken one changes nothing.

- test_a_changed_module_answers_the_next_turn_and_a_broken_one_is_refused: v1 answers;
  the module is rewritten (v2) and, after the reload the server announces (a fresh
  ``tool_list``), the same session's next turn runs v2; then a module that raises at
  import is refused (audited with its file and line) and v2 keeps serving.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from engine.audit import query
from engine.client import open_client
from engine.protocol import ToolList
from tests.agents.conftest import add_agent
from tests.engine.conftest import RunningServer

VERSION = """
from engine.agents import BaseAgent

class Agent(BaseAgent):
    async def process_message(self, message, context):
        return "{version}"
"""


def _touch_later(path: Path) -> None:
    # Coarse mtimes on some filesystems: make sure the watcher sees the change.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def _reload_refused(server: RunningServer) -> list[str]:
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="config_reload"))
    return [error for r in records if r.outcome == "error" for error in r.to_dict()["details"]["errors"]]


async def test_a_changed_module_answers_the_next_turn_and_a_broken_one_is_refused(
    agents_config: Path, start_server: Callable[..., object]
) -> None:
    add_agent(agents_config, "versioned", VERSION.format(version="v1"))
    module = agents_config / "agents.d" / "versioned.py"
    server: RunningServer = await start_server(agents_config, reload_interval_s=0.1)  # type: ignore[operator]
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            await client.next_event_of(ToolList)
            sid = (await client.start_session("versioned")).session_id
            assert (await client.converse(sid, "which?")).response.content == "v1"
            module.write_text(VERSION.format(version="v2"))
            _touch_later(module)
            await client.next_event_of(ToolList)  # sent to every client after a reload
            assert (await client.converse(sid, "which?")).response.content == "v2"

            module.write_text("import os\nraise RuntimeError('half-written')\n")
            _touch_later(module)
            while not (errors := await _reload_refused(server)):  # noqa: ASYNC110 (polls the audit database)
                await trio.sleep(0.05)
            assert errors == ["agents.d/versioned.yaml:3:9: python: module 'versioned' failed to import: "
                              "agents.d/versioned.py:2: RuntimeError: half-written"]
            assert (await client.converse(sid, "which?")).response.content == "v2"
