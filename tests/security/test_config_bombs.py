"""Hostile configuration files (issue 11.3): each attack is performed for real and must end refused.

A hot reload and ``sconnect check`` read whatever lands in the configuration
directory, in the service's own process.  Each test drops one hostile file into
a private copy of a configuration and asserts that the load refuses it with a
located problem, and that the work was bounded (the file was refused before
the costly step: nothing is timed).

- billion laughs: nine levels of aliases in a few hundred bytes (387 million
  values once expanded) are refused at the first anchor, before composing, in a check and in a running
  server's reload; the same bomb as a *valid* tool's schema never reaches a
  ``tool_list``.
- an 8 MiB file, and a sparse 64 GiB one (reading it whole would exhaust
  memory), are refused from their size alone.
- 100,000 nested lists crash libyaml's composer (SIGSEGV: the whole server
  would die); ``sconnect check`` in a subprocess exits 1 with the depth
  problem.  Too many values, a huge ``parameters`` schema and too many files
  in one directory are refused too.
- a symlink in ``tools.d/`` to a secret file outside the configuration (as
  ``/etc/shadow`` was) is refused unread, naming the link: the secret's marker
  appears nowhere - not in ``check``'s output, the server's log or the audit
  log; the same for a ``.py`` beside a tool linked to the secret, and for a link
  swapped in after the loader looked (checked on the opened descriptor).
- a file that does not parse never has its text echoed: YAML errors say file,
  line, column and what is wrong, never the content or PyYAML's snippet.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import open_client
from engine.config import load_config
from engine.config.yamldoc import read_document
from engine.errors import ConfigError
from tests.conftest import REPO
from tests.engine.conftest import RunningServer, config_dir, start_server, state_dir  # noqa: F401

MARKER = "SECRET-MARKER-7f3a9c"

TOOL_HEAD = """\
name: lol
description: Laughs.
permission_level: 0
command: [/bin/true]
"""


def billion_laughs() -> str:
    """The classic: level k holds nine aliases of level k-1 (342 bytes, 387 million values)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def laughing_tool() -> str:
    """A tool that is valid in every respect but carries the bomb in its schema's examples."""
    levels = ["    - &a [l,l,l,l,l,l,l,l,l]"]
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        levels.append(f"    - &{name} [{','.join(['*' + prev] * 9)}]")
    return TOOL_HEAD + "parameters:\n  type: object\n  examples:\n" + "\n".join(levels) + "\n"


def problems(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


def sconnect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file outside the configuration, shaped like /etc/shadow and like YAML, holding the marker."""
    secret = tmp_path / "shadow"
    secret.write_text(
        f"root:$y$j9T${MARKER}$hash:19000:0:99999:7:::\n"
        f"{MARKER}-key: {MARKER}-value\n"
    )
    return secret


def test_billion_laughs_is_refused_at_its_first_anchor(minimal_config: Path) -> None:
    bomb = billion_laughs()
    assert len(bomb) < 600
    (minimal_config / "tools.d" / "lol.yaml").write_text(bomb)
    assert problems(minimal_config) == [
        "tools.d/lol.yaml:1:4: YAML anchors and aliases are not allowed in configuration files: write each value out"
    ]


def test_an_anchor_alone_is_refused(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "lol.yaml").write_text(TOOL_HEAD + "parameters: &p {type: object}\n")
    assert problems(minimal_config) == [
        "tools.d/lol.yaml:5:13: YAML anchors and aliases are not allowed in configuration files: write each value out"
    ]


def test_an_alias_bomb_as_a_valid_tool_is_refused(minimal_config: Path) -> None:
    tool = laughing_tool()
    assert len(tool) < 600
    (minimal_config / "tools.d" / "lol.yaml").write_text(tool)
    [message] = problems(minimal_config)
    assert message.startswith("tools.d/lol.yaml:8:7: ")
    assert "aliases are not allowed" in message


async def test_reload_of_a_bomb_keeps_serving_and_tool_list_stays_small(
    start_server, config_dir: Path  # noqa: F811
) -> None:
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            before = await client.list_tools()
            (config_dir / "tools.d" / "lol.yaml").write_text(laughing_tool())
            (config_dir / "tools.d" / "laughs.yaml").write_text(billion_laughs())
            expected = [
                "tools.d/laughs.yaml:1:4: YAML anchors and aliases are not allowed in configuration files: "
                "write each value out",
                "tools.d/lol.yaml:8:7: YAML anchors and aliases are not allowed in configuration files: "
                "write each value out",
            ]
            # The watcher may see one file before the other: wait for the reload that saw both.
            await _reload_records(server, "error", lambda errors: errors == expected)
            # The old configuration still serves, and what a client is sent stays its old size.
            result = await client.call_tool("calculator", {"expression": "2+2"})
            assert str(result.status) == "ok"
            listed = await client.list_tools()
            assert {tool.name for tool in listed.tools} == {tool.name for tool in before.tools}
            assert "lol" not in {tool.name for tool in listed.tools}
            assert len(json.dumps([tool.parameters for tool in listed.tools])) < 64 * 1024


def test_an_8_mib_file_is_refused_from_its_size(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "big.yaml").write_text("name: big\ndescription: " + "x" * (8 * 2**20) + "\n")
    assert problems(minimal_config) == [
        "tools.d/big.yaml: file is 8.0 MiB; a configuration file may be at most 256 KiB"
    ]


def test_a_sparse_64_gib_file_is_refused_unread(minimal_config: Path) -> None:
    # Reading this whole would need 64 GiB of memory: the refusal proves it was never read.
    with open(minimal_config / "tools.d" / "huge.yaml", "wb") as sparse:
        sparse.truncate(64 * 2**30)
    assert problems(minimal_config) == [
        "tools.d/huge.yaml: file is 64 GiB; a configuration file may be at most 256 KiB"
    ]


def test_deep_nesting_is_refused_without_crashing_the_process(minimal_config: Path) -> None:
    # libyaml's composer recurses in C: this file killed the process with SIGSEGV.
    (minimal_config / "tools.d" / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    done = sconnect("check", "--config", str(minimal_config))
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    # Our own bound fires first; PyYAML 6.0.4 and later also stop a flow this deep by themselves.
    assert ("tools.d/deep.yaml:1:67: lists and mappings nested more than 64 deep: refused" in done.stderr
            or "tools.d/deep.yaml:1:1003: YAML syntax error: while increasing flow level exceeded maximum nesting "
               "depth" in done.stderr), done.stderr


def test_too_many_values_are_refused(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "many.yaml").write_text("a: [" + "1," * 30_000 + "1]\n")
    assert problems(minimal_config) == ["tools.d/many.yaml:1:39999: more than 20000 YAML values in one file: refused"]


def test_a_huge_parameters_schema_is_refused(minimal_config: Path) -> None:
    properties = "".join(f"    p{i}: {{type: string, description: {'d' * 40}}}\n" for i in range(1000))
    text = TOOL_HEAD + "parameters:\n  type: object\n  properties:\n" + properties
    assert len(text.encode()) < 256 * 1024  # within the file bound: the schema bound is what refuses it
    (minimal_config / "tools.d" / "lol.yaml").write_text(text)
    [message] = problems(minimal_config)
    assert message.startswith("tools.d/lol.yaml:6:3: parameters: the schema is ")
    assert message.endswith(" KiB as JSON; a tool's parameters may be at most 32 KiB")


def test_too_many_files_in_one_directory_are_refused(minimal_config: Path) -> None:
    for index in range(1001):
        (minimal_config / "policies" / f"p{index:04}.yaml").write_text("")
    assert problems(minimal_config) == ["policies: holds more than 1000 configuration files: refused"]


def test_a_symlink_to_a_secret_is_refused_unread(minimal_config: Path, secret_file: Path) -> None:
    (minimal_config / "tools.d" / "shadow.yaml").symlink_to(secret_file)
    expected = "tools.d/shadow.yaml: is a symbolic link leading outside the configuration directory: refused, not read"
    assert problems(minimal_config) == [expected]
    done = sconnect("check", "--config", str(minimal_config))
    assert done.returncode == 1
    assert expected in done.stderr
    as_json = sconnect("check", "--config", str(minimal_config), "--json")
    for output in (done.stdout, done.stderr, as_json.stdout, as_json.stderr):
        assert MARKER not in output


def test_a_link_swapped_in_after_the_check_is_refused_on_its_descriptor(
    minimal_config: Path, secret_file: Path
) -> None:
    # The loader looks at where a link leads, then opens it: an attacker may swap the link
    # in between. The reader checks what it actually opened, so the swap is refused too.
    link = minimal_config / "tools.d" / "swapped.yaml"
    link.symlink_to(secret_file)
    found = read_document(link, "tools.d/swapped.yaml", inside=(minimal_config, minimal_config / "tools.d"))
    assert isinstance(found, list)
    assert [str(problem) for problem in found] == [
        "tools.d/swapped.yaml: is a symbolic link leading outside the configuration directory: refused, not read"
    ]


def test_a_symlink_through_a_linked_subdirectory_is_refused(minimal_config: Path, secret_file: Path) -> None:
    # A link to a directory outside, then a file link through it: still outside, still refused.
    (minimal_config / "tools.d" / "outside").symlink_to(secret_file.parent, target_is_directory=True)
    (minimal_config / "tools.d" / "via.yaml").symlink_to(Path("outside") / secret_file.name)
    [message] = problems(minimal_config)
    assert message == (
        "tools.d/via.yaml: is a symbolic link leading outside the configuration directory: refused, not read"
    )


def test_a_symlink_inside_the_configuration_is_followed(minimal_config: Path) -> None:
    # Links that stay inside (a ConfigMap's ..data/ layout) are the operator's own: they load.
    data = minimal_config / "tools.d" / "..data"
    data.mkdir()
    echo = minimal_config / "tools.d" / "echo.yaml"
    echo.rename(data / "echo.yaml")
    echo.symlink_to(Path("..data") / "echo.yaml")
    assert "echo" in load_config(minimal_config).tools


async def test_reload_never_logs_or_audits_a_linked_secret(
    start_server, config_dir: Path, secret_file: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.INFO)
    server: RunningServer = await start_server(config_dir, reload_interval_s=0.1)
    (config_dir / "tools.d" / "shadow.yaml").symlink_to(secret_file)
    with trio.fail_after(30):
        records = await _reload_records(server, "error")
    details = records[0].to_dict()["details"]
    assert details["errors"] == [
        "tools.d/shadow.yaml: is a symbolic link leading outside the configuration directory: refused, not read"
    ]
    every_record = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir))
    assert MARKER not in json.dumps([record.to_dict() for record in every_record])
    assert "tools.d/shadow.yaml" in caplog.text
    assert MARKER not in caplog.text


def test_a_module_beside_a_tool_may_not_link_out(minimal_config: Path, secret_file: Path) -> None:
    (minimal_config / "tools.d" / "greet.py").symlink_to(secret_file)
    (minimal_config / "tools.d" / "greet.yaml").write_text(
        "name: greet\ndescription: Greets.\npermission_level: 0\npython: greet:run\nparameters: {type: object}\n"
    )
    found = problems(minimal_config)
    assert found == [
        "tools.d/greet.yaml:4:9: python: tools.d/greet.py is a symbolic link outside the configuration "
        "directory: refused, not read"
    ]
    assert MARKER not in "".join(found)


def test_a_package_beside_a_tool_may_not_link_out(minimal_config: Path, tmp_path: Path) -> None:
    # A linked package directory would be bound whole into the sandbox: it must be the operator's.
    outside = tmp_path / "elsewhere" / "mytools"
    outside.mkdir(parents=True)
    (outside / "greet.py").write_text("def run():\n    return 1\n")
    (minimal_config / "tools.d" / "mytools").symlink_to(outside, target_is_directory=True)
    (minimal_config / "tools.d" / "greet.yaml").write_text(
        "name: greet\ndescription: Greets.\npermission_level: 0\npython: mytools.greet:run\n"
        "parameters: {type: object}\n"
    )
    assert problems(minimal_config) == [
        "tools.d/greet.yaml:4:9: python: tools.d/mytools is a symbolic link outside the configuration "
        "directory: refused, not read"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PyYAML's own message would quote the tag, the snippet would quote the line.
        (f"name: x\nkey: !{MARKER} value\n", "tools.d/x.yaml:2:6: explicit YAML tags other than !!str, !!int, "
         "!!float, !!bool, !!null, !!seq and !!map are not allowed"),
        (f"name: x\nkey: !!python/object:{MARKER} value\n", "tools.d/x.yaml:2:6: explicit YAML tags other than "
         "!!str, !!int, !!float, !!bool, !!null, !!seq and !!map are not allowed"),
        (f"{MARKER}: [a, b\n", "tools.d/x.yaml:2:1: YAML syntax error: while parsing a flow sequence did not find "
         "expected ',' or ']'"),
        (f"{MARKER}: \"bad \\q escape\"\n", None),
        (f"{MARKER}: x: y\n", None),
        (f"\t{MARKER}\n", None),
        (f"a: 1\n{MARKER}\n", None),
    ],
)
def test_unparseable_content_is_never_echoed(minimal_config: Path, text: str, expected: str | None) -> None:
    (minimal_config / "tools.d" / "x.yaml").write_text(text)
    [message] = problems(minimal_config)
    assert MARKER not in message
    assert message.startswith("tools.d/x.yaml:")
    if expected is not None:
        assert message == expected


async def _reload_records(
    server: RunningServer, outcome: str, errors: Callable[[list[str]], bool] = lambda _: True
) -> list:  # type: ignore[type-arg]
    """The audited reloads with ``outcome`` (and ``errors`` to match), once there is one.

    Polled: the watcher decides when it reloads.  Callers bound the wait with ``fail_after``.
    """
    while True:
        records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="config_reload"))
        matching = [
            record for record in records
            if record.outcome == outcome and errors(record.to_dict()["details"].get("errors", []))
        ]
        if matching:
            return matching
        await trio.sleep(0.05)
