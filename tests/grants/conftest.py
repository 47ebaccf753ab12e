"""A real server on a copy of the shipped configuration plus small tools for grants.

The tools run ``/bin/cat`` (their arguments come back as their output) with process
isolation: quick, and what they do is beside the point here; what matters is whether
an approval is asked or a grant covers the call.

- ``note`` (level 1, ``path`` and ``size``), ``cmd`` (level 2, ``command``),
  ``pin`` (level 1, a secret ``pin``): remembered by the default bounds;
- ``secretive`` (level 1): a rule says ``remember: never``;
- ``vault`` (level 3, unlocked for alice with her approval): never remembered;
- ``vault2`` (level 3, likewise, with a rule's ``remember: {max: 2h}``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.client import Client
from engine.protocol import AgentAction, AgentResult, ErrorFrame, ServerFrame, ToolCall, new_id
from tests.engine.conftest import RunningServer, copy_example_config
from tests.engine.conftest import start_server as start_server  # noqa: F401 - fixtures
from tests.engine.conftest import state_dir as state_dir  # noqa: F401

TOOL = """\
name: {name}
description: Gives its arguments back (a test tool for grants).
permission_level: {level}
command: [/bin/cat]
parameters:
  type: object
  properties: {properties}
  additionalProperties: false
{extra}sandbox: {{timeout: 5s, isolation: process}}
"""

POLICY = """\
name: grants
description: Rules the grants tests rest on.
rules:
  - id: secretive-never-remembered
    effect: allow
    subjects: {roles: [user, admin]}
    targets: {tools: [secretive]}
    remember: never
  - id: alice-vault
    effect: require_approval
    approver: user
    subjects: {subs: [alice]}
    targets: {tools: [vault]}
  - id: alice-vault2
    effect: require_approval
    approver: user
    subjects: {subs: [alice]}
    targets: {tools: [vault2]}
    remember: {max: 2h}
"""


def grants_config(root: Path) -> Path:
    copy_example_config(root)
    tools = root / "tools.d"
    text = "{type: string, maxLength: 200}"
    for name, level, properties, extra in (
        ("note", 1, f"{{path: {text}, size: {{type: integer}}}}", ""),
        ("cmd", 2, f"{{command: {text}}}", ""),
        ("pin", 1, f"{{account: {text}, pin: {text}}}", "secret_arguments: [pin]\n"),
        ("secretive", 1, f"{{path: {text}}}", ""),
        ("vault", 3, f"{{path: {text}}}", ""),
        ("vault2", 3, f"{{path: {text}}}", ""),
    ):
        (tools / f"{name}.yaml").write_text(TOOL.format(name=name, level=level, properties=properties, extra=extra))
    (root / "policies" / "grants.yaml").write_text(POLICY)
    return root


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return grants_config(tmp_path / "config")


@pytest.fixture
async def server(start_server: Callable[..., Any], config_dir: Path) -> RunningServer:  # noqa: F811
    return await start_server(config_dir)  # type: ignore[no-any-return]


async def ask(client: Client, name: str, arguments: dict[str, Any], session_id: str | None = None) -> AgentAction:
    """Send a tool call; its ``agent_action`` (the call's result then follows as an event)."""
    frame = ToolCall(id=new_id(), name=name, arguments=arguments, session_id=session_id)
    await client.send(frame)
    while True:
        event = await client.next_event()
        if isinstance(event, AgentAction) and event.reply_to == frame.id:
            return event


async def result_of(client: Client, action: AgentAction) -> AgentResult:
    while True:
        event = await client.next_event()
        if isinstance(event, AgentResult) and event.action_id == action.action_id:
            return event


async def refusal(client: Client, frame_id: str) -> ErrorFrame:
    """The error answering ``frame_id`` (an approval that was refused)."""
    while True:
        event: ServerFrame = await client.next_event()
        if isinstance(event, ErrorFrame) and event.reply_to == frame_id:
            return event


async def covered(client: Client, name: str, arguments: dict[str, Any], session_id: str | None = None) -> bool:
    """Whether this call runs under a grant (True) or asks for an approval (False, then denied)."""
    action = await ask(client, name, arguments, session_id)
    if action.requires_approval:
        if str(action.approver) == "user":
            await client.answer(action.action_id, False, "not in this test")
            result = await result_of(client, action)
            assert str(result.status) == "denied"
        return False
    assert action.grant is not None, action
    result = await result_of(client, action)
    assert str(result.status) == "ok", result
    return True



__all__ = ["ask", "covered", "grants_config", "refusal", "result_of"]
