"""A tool kind and a model provider added from outside the engine: their own module and its
registration are all they take (engine/config/tool_kinds.py, engine/config/model_providers.py).

The examples are the README's ("Extending"), in tests/engine/extending/; each test registers
them itself and unregisters them after, so nothing of the engine names them.

- ``test_a_registered_tool_kind_runs_end_to_end``: a tools.d/ file of the ``script`` kind
  loads, is listed with its kind's one-line description, is decided by the shipped policy
  (level 1: the user approves), runs in its sandbox with the arguments on stdin, and is
  audited (decision, approval, execution).
- ``test_a_registered_model_provider_answers_turns``: agents using the ``echo`` provider,
  inline and by a models.d/ name, answer a turn with the echo.
- ``test_a_registered_kind_and_provider_bring_their_schema_and_checks``: bad files of the
  new kind and provider are refused, located, with the words of their schema fragment and
  of their checks; the "exactly one of" message names the new kind.
- ``test_a_kind_with_settings_of_its_own_is_located_in_its_key``: a kind whose settings
  are an attrs class: a file's settings are structured into ``Tool.options``, and a
  failing one is reported at the kind's key (not at ``options``).
- ``test_once_unregistered_the_kind_is_refused_again``: the same file, after the kind is
  unregistered, is refused as declaring no kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.config import load_config, model_providers, tool_kinds
from engine.errors import ConfigError
from tests.engine.conftest import RunningServer, copy_example_config
from tests.engine.extending import echo, script

SHOW_ARGUMENTS = """\
name: show_arguments
description: Shows the arguments it was given (a script tool).
permission_level: 1
parameters:
  type: object
  properties: {text: {type: string}}
  required: [text]
  additionalProperties: false
script: |
  printf '{"given": %s, "shell": "sh"}' "$(cat)"
"""
PARROT = """\
name: parrot
description: Repeats what it hears (the echo provider, inline).
model: {provider: echo, prefix: "Heard: "}
"""
PARROT_MODEL = """\
name: parrot_model
description: The echo provider, declared once.
provider: echo
"""
NAMED_PARROT = """\
name: named_parrot
description: Repeats what it hears (the echo provider, by name).
model: parrot_model
"""


@pytest.fixture
def registered() -> Iterator[None]:
    tool_kinds.register(script.KIND)
    model_providers.register(echo.PROVIDER)
    try:
        yield
    finally:
        tool_kinds.unregister("script")
        model_providers.unregister("echo")


def _config_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = copy_example_config(tmp_path / "config")
    for name, text in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(text)
    return root


def _problems(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


async def test_a_registered_tool_kind_runs_end_to_end(
    registered: None, tmp_path: Path, start_server: Callable[..., object]
) -> None:
    root = _config_dir(tmp_path, {"tools.d/show_arguments.yaml": SHOW_ARGUMENTS})
    tool = load_config(root).tools["show_arguments"]
    assert (tool.kind, tool.options, tool.runs) == ("script", 'printf \'{"given": %s, "shell": "sh"}\' "$(cat)"\n',
                                                    "sh script")
    server: RunningServer = await start_server(root)  # type: ignore[operator]
    asked = []
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert listed["show_arguments"].level == 1
            result = await client.call_tool("show_arguments", {"text": "hi"}, approve=lambda a: asked.append(a) or True)
    assert [(a.name, a.requires_approval, str(a.approver)) for a in asked] == [("show_arguments", True, "user")]
    assert (str(result.status), result.output) == ("ok", {"given": {"text": "hi"}, "shell": "sh"})
    records = query(server.settings.state_dir, tool="show_arguments")
    assert [(r.kind, r.outcome) for r in records] == [
        ("decision", "require_approval"), ("approval", "approved"), ("execution", "ok"),
    ]


async def test_a_registered_model_provider_answers_turns(
    registered: None, tmp_path: Path, start_server: Callable[..., object]
) -> None:
    root = _config_dir(tmp_path, {
        "agents.d/parrot.yaml": PARROT, "models.d/parrot_model.yaml": PARROT_MODEL,
        "agents.d/named_parrot.yaml": NAMED_PARROT,
    })
    server: RunningServer = await start_server(root)  # type: ignore[operator]
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            inline = (await client.start_session("parrot")).session_id
            assert (await client.converse(inline, "hello")).response.content == "Heard: hello"
            named = (await client.start_session("named_parrot")).session_id
            assert (await client.converse(named, "hello")).response.content == "You said: hello"


def test_a_registered_kind_and_provider_bring_their_schema_and_checks(registered: None, tmp_path: Path) -> None:
    head = SHOW_ARGUMENTS.split("script:")[0]
    root = _config_dir(tmp_path, {
        "tools.d/not_text.yaml": head.replace("show_arguments", "not_text") + "script: 5\n",
        "tools.d/shebang.yaml": head.replace("show_arguments", "shebang") + "script: |\n  #!/bin/bash\n  echo {}\n",
        "tools.d/both.yaml": SHOW_ARGUMENTS.replace("show_arguments", "both") + "command: [/bin/true]\n",
        "agents.d/parrot.yaml": PARROT.replace("prefix:", "prefx:"),
    })
    assert _problems(root) == [
        "agents.d/parrot.yaml:3:25: model.prefx: unknown key 'prefx' (did you mean 'prefix'?)",
        "tools.d/both.yaml:1:1: declare exactly one of 'command' (an argv list), 'python' (module:function), "
        "'chain' (a list of steps, with no sandbox of its own), 'mcp_server', "
        "'builtin' (remember or forget, carried out by the engine) "
        "and 'script' (a /bin/sh script)",
        "tools.d/not_text.yaml:9:9: script: 5 is not of type 'string'",
        "tools.d/shebang.yaml:9:9: script: runs with /bin/sh: leave out the #! line",
    ]


@attrs.frozen
class Shout:
    text: str
    times: int = attrs.field(default=1, validator=attrs.validators.ge(1))


async def _never(tool: Any, arguments: Any, *, workspace: Path, work_root: Path) -> Any:
    raise AssertionError("not run: the file does not load")


def test_a_kind_with_settings_of_its_own_is_located_in_its_key(tmp_path: Path) -> None:
    """A kind's options_class is structured from its key; a failure names the key, not ``options``."""
    kind = tool_kinds.ToolKind(name="shout", schema={"type": "object"}, hint="'shout'", options_class=Shout,
                               describe=lambda tool: "shout", launch=_never)
    head = SHOW_ARGUMENTS.split("script:")[0]
    root = _config_dir(tmp_path, {"tools.d/loud.yaml": head.replace("show_arguments", "loud") + "shout: {text: hi}\n",
                              "tools.d/zero.yaml": head.replace("show_arguments", "zero")
                              + "shout: {text: hi, times: 0}\n"})
    tool_kinds.register(kind)
    try:
        assert _problems(root) == ["tools.d/zero.yaml:9:8: shout: 'times' must be >= 1: 0"]
        (root / "tools.d/zero.yaml").unlink()
        assert load_config(root).tools["loud"].options == Shout("hi")
    finally:
        tool_kinds.unregister("shout")


def test_once_unregistered_the_kind_is_refused_again(tmp_path: Path) -> None:
    root = _config_dir(tmp_path, {"tools.d/show_arguments.yaml": SHOW_ARGUMENTS})
    tool_kinds.register(script.KIND)
    try:
        assert load_config(root).tools["show_arguments"].kind == "script"
    finally:
        tool_kinds.unregister("script")
    assert _problems(root) == [
        "tools.d/show_arguments.yaml:1:1: declare exactly one of 'command' (an argv list), "
        "'python' (module:function), 'chain' (a list of steps, with no sandbox of its own), 'mcp_server' and "
        "'builtin' (remember or forget, carried out by the engine)",
        "tools.d/show_arguments.yaml:9:1: script: unknown key 'script' (did you mean 'description'?)",
    ]
