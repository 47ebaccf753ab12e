"""MCP servers as tools through the real server: WebSocket `tool_call`, real sandboxes,
the real test MCP server (tests/data/upstream/server.py), no network.

- per_call / shared / single_use: listing shows only the allowlisted tools with their
  pinned schemas; calls return the server's results; shared keeps state across calls,
  single_use gives every call a fresh, pre-started server;
- a tool the file does not list is an unknown tool; arguments failing the pinned schema
  are refused before any server starts;
- faults (crash, garbage on stdout, hang, an error result, a start that takes too long)
  end that call with a readable error and the server's stderr, and the next call works;
- a tool whose definition changed after pinning is refused and audited, the others work;
- cancellation (the caller's connection closes) and removing the file leave no process;
- the server's environment is what its sandbox block declares, nothing of the engine's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.client import ServerError, open_client
from engine.protocol import AgentResult, ToolCall, ToolList
from tests.conftest import processes_with
from tests.engine.conftest import RunningServer
from tests.upstream.conftest import MakeConfig
from tests.upstream.env import UpstreamEnv

pytestmark = pytest.mark.slow

LIFECYCLES = ["per_call", "shared", "single_use"]


def _token(server: RunningServer) -> str:
    return server.token("mia", ("member",))


async def _call(server: RunningServer, name: str, arguments: dict[str, Any]) -> AgentResult:
    async with open_client(server.url, _token(server)) as client:
        return await client.call_tool(name, arguments)


async def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Wait for `condition` (polled, bounded): tests wait for events, never for time."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (polling files and /proc: no event to wait on)
            await trio.sleep(0.05)


async def _no_process(tag: str) -> None:
    """Wait until no process holds `tag` in its argv; else fail naming what is left."""
    try:
        await _until(lambda: not processes_with(tag))
    except trio.TooSlowError:
        raise AssertionError(f"processes left behind: {_describe(processes_with(tag))}") from None


def _describe(pids: list[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        left.append(f"{pid} {status.get('Name')} ppid {status.get('PPid')} state {status.get('State')}")
    return left


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_per_call_lists_and_calls(start_server: Callable[..., Any], mcp_config: MakeConfig) -> None:
    server = await start_server(mcp_config())
    with trio.fail_after(60):
        async with open_client(server.url, _token(server)) as client:
            listing = await client.list_tools()
            tools = {tool.name: tool for tool in listing.tools}
            assert {"up_echo", "adder", "up_counter"} <= set(tools)
            assert "up_secret_env" not in tools and "up_add" not in tools
            assert tools["up_echo"].parameters["required"] == ["text"]
            echo = await client.call_tool("up_echo", {"text": "hello"})
            assert (echo.status, echo.output) == ("ok", {"text": "hello"})
            added = await client.call_tool("adder", {"a": 2, "b": 3})
            assert (added.status, added.output) == ("ok", {"sum": 5})


async def test_a_tool_the_file_does_not_list_cannot_be_called(
    start_server: Callable[..., Any], mcp_config: MakeConfig
) -> None:
    server = await start_server(mcp_config())
    with trio.fail_after(30):
        async with open_client(server.url, _token(server)) as client:
            for name in ("up_secret_env", "up_add", "secret_env"):
                with pytest.raises(ServerError, match=f"not_found: no tool named '{name}'"):
                    await client.call_tool(name, {})


async def test_arguments_are_checked_before_the_server_starts(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str
) -> None:
    server = await start_server(mcp_config())
    with trio.fail_after(30):
        result = await _call(server, "adder", {"a": "two", "b": 3})
    assert result.status == "error" and result.output["error"] == "invalid arguments"
    assert result.output["problems"] == ["a: 'two' is not of type 'integer'"]
    assert _lines(upstream_env.starts(tag)) == []


async def test_shared_keeps_one_server_and_its_state(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str
) -> None:
    server = await start_server(mcp_config(lifecycle="shared"))
    with trio.fail_after(60):
        async with open_client(server.url, _token(server)) as client:
            counts = [(await client.call_tool("up_counter", {})).output["count"] for _ in range(3)]
            first = await client.call_tool("up_instance", {})
            second = await client.call_tool("up_instance", {})
    assert counts == [1, 2, 3]
    assert first.output == second.output
    assert len(_lines(upstream_env.starts(tag))) == 1


async def test_single_use_gives_each_call_a_fresh_prestarted_server(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str
) -> None:
    server = await start_server(mcp_config(lifecycle="single_use", pool_size=2))
    starts = upstream_env.starts(tag)
    with trio.fail_after(90):
        # Started ahead of any call...
        await _until(lambda: len(_lines(starts)) >= 2)
        async with open_client(server.url, _token(server)) as client:
            instances = [(await client.call_tool("up_instance", {})).output["instance"] for _ in range(3)]
            counts = [(await client.call_tool("up_counter", {})).output["count"] for _ in range(2)]
        # ...each call on its own server, and the pool refilled behind the calls.
        assert len(set(instances)) == 3 and set(instances) <= set(_lines(starts))
        assert counts == [1, 1]
        await _until(lambda: len(_lines(starts)) >= 7)


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_faults_end_the_call_and_the_next_one_works(
    start_server: Callable[..., Any], mcp_config: MakeConfig, lifecycle: str
) -> None:
    # The shared server is restarted after each fault; a short first pause keeps the test
    # from waiting out the default back-off (0.5 s doubling) three times.
    # single_use: a sandbox ready for each of the four faults at once.
    server = await start_server(mcp_config(lifecycle=lifecycle, timeout="3s", restart_backoff="50ms", pool_size=4))
    expected = {
        "up_crash": ("error", "exited with code 3", "crashing on purpose"),
        "up_garbage": ("error", "not JSON-RPC on stdout: 'this is not JSON-RPC'", ""),
        "up_hang": ("timeout", "killed after 3s timeout", "hanging on purpose"),
        "up_fail": ("error", "the tool reported an error: the upstream tool failed on purpose", ""),
    }

    async def fault_then_echo(client: Any, name: str) -> None:
        status, message, stderr = expected[name]
        result = await client.call_tool(name, {})
        assert result.status == status, (name, result.output)
        assert message in result.output["error"], (name, result.output)
        assert stderr in result.output["stderr"], (name, result.output)
        after = await client.call_tool("up_echo", {"text": f"after {name}"})
        assert (after.status, after.output) == ("ok", {"text": f"after {name}"}), (name, after.output)

    with trio.fail_after(150):
        if lifecycle == "shared":
            # One server for every call: each fault must be seen alone, in turn.
            async with open_client(server.url, _token(server)) as client:
                for name in expected:
                    await fault_then_echo(client, name)
        else:
            # A server (sandbox) per call: the faults cannot touch each other, so they
            # run side by side, each on its own connection (the hang's timeout overlaps
            # the others' starts).
            async with trio.open_nursery() as nursery:
                for name in expected:

                    async def one(name: str = name) -> None:
                        async with open_client(server.url, _token(server)) as client:
                            await fault_then_echo(client, name)

                    nursery.start_soon(one)


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_a_server_too_slow_to_start(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str, lifecycle: str
) -> None:
    upstream_env.delay(tag).write_text("60")
    server = await start_server(mcp_config(lifecycle=lifecycle, startup_timeout="3s"))
    with trio.fail_after(120):
        result = await _call(server, "up_echo", {"text": "slow"})
        assert result.status == "error"
        assert "within 3s" in result.output["error"], result.output
        upstream_env.delay(tag).unlink()
        # Restarted (after a pause that grows with each failure) and serving again.
        while (result := await _call(server, "up_echo", {"text": "now"})).status != "ok":
            assert "within 3s" in result.output["error"], result.output
        assert result.output == {"text": "now"}


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_a_tool_changed_after_pinning_is_refused_and_audited(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str, lifecycle: str
) -> None:
    upstream_env.descriptions(tag).write_text(json.dumps({"echo": "Echo, and also mail it to someone."}))
    server = await start_server(mcp_config(lifecycle=lifecycle))
    with trio.fail_after(60):
        result = await _call(server, "up_echo", {"text": "x"})
        assert result.status == "error"
        assert "the server's definition of 'echo' changed since it was pinned" in result.output["error"]
        added = await _call(server, "adder", {"a": 1, "b": 1})
        assert (added.status, added.output) == ("ok", {"sum": 2})

        def audited() -> list[tuple[str, str]]:
            with sqlite3.connect(server.settings.state_dir / "audit.db") as db:
                return db.execute(
                    "SELECT target, details FROM audit_records WHERE kind = 'decision' AND outcome = 'pin_mismatch'"
                ).fetchall()

        await _until(lambda: bool(audited()))
        target, details = audited()[0]
        assert target == "up_echo" and "changed since it was pinned" in json.loads(details)["reason"]


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_cancelling_a_call_leaves_no_process(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str, lifecycle: str
) -> None:
    server = await start_server(mcp_config(lifecycle=lifecycle, timeout="60s"))
    starts = upstream_env.starts(tag)
    with trio.fail_after(90):
        if lifecycle != "per_call":
            await _until(lambda: len(_lines(starts)) >= (2 if lifecycle == "single_use" else 1))
        idle = set(processes_with(tag))
        calls = upstream_env.calls(tag)
        async with open_client(server.url, _token(server)) as client:
            await client.send(ToolCall(id="c1", name="up_hang", arguments={}))
            # The server writes down each call it receives: the call is in flight.
            await _until(lambda: "hang" in _lines(calls))
        # The connection closed: its call is cancelled.
        if lifecycle == "shared":
            # One server for everyone: the call is abandoned, the server keeps serving.
            result = await _call(server, "up_echo", {"text": "still here"})
            assert result.output == {"text": "still here"}
        elif lifecycle == "single_use":
            # The server that took the call is killed; the pool starts others.
            await _until(lambda: not idle <= set(processes_with(tag)))
        else:
            await _no_process(tag)


async def test_stopping_the_server_and_removing_the_file_leave_no_process(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str
) -> None:
    config = mcp_config(lifecycle="shared")
    server = await start_server(config)
    with trio.fail_after(60):
        await _until(lambda: len(_lines(upstream_env.starts(tag))) >= 1 and bool(processes_with(tag)))
        # The policy names `adder`: it goes first, or the reload would be refused.
        (config / "policies" / "upstream.yaml").unlink()
        (config / "tools.d" / "up.yaml").unlink()
        await _no_process(tag)
        async with open_client(server.url, _token(server)) as client:
            assert "up_echo" not in {tool.name for tool in (await client.list_tools()).tools}
    assert isinstance(server, RunningServer)


async def test_server_shutdown_kills_its_mcp_servers(
    mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str, state_dir: Path
) -> None:
    from engine.auth import AuthSettings
    from engine.server import ServerSettings, serve
    from tests.engine.conftest import SECRET

    settings = ServerSettings(
        config_dir=mcp_config(lifecycle="single_use"), state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, settings)
            await _until(lambda: len(processes_with(tag)) >= 2)
            nursery.cancel_scope.cancel()
        await _no_process(tag)
    assert ToolList  # the protocol's listing frame is what list_tools answers with


async def test_the_server_sees_only_its_declared_environment(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Exposed here on purpose (never do this with a real server that has such a tool).
    monkeypatch.setenv("SCONNECT_TEST_SECRET", "must-not-leak")
    tools = "    secret_env: {permission_level: 0}\n    add: {permission_level: 0, as: adder}\n"
    server = await start_server(mcp_config(tools=tools))
    with trio.fail_after(60):
        result = await _call(server, "up_secret_env", {})
    assert result.status == "ok", result.output
    environment = dict(result.output)
    # Set inside the sandbox, not passed from the engine: Python sets LC_CTYPE in the C
    # locale (PEP 538); bwrap's --chdir sets PWD to the call's own work dir.
    environment.pop("LC_CTYPE", None)
    assert environment.pop("PWD", "").startswith(str(server.settings.work_root))
    assert environment == {"PYTHONPATH": str(upstream_env.site)}


async def test_a_reload_that_changes_the_file_replaces_its_server(
    start_server: Callable[..., Any], mcp_config: MakeConfig, upstream_env: UpstreamEnv, tag: str
) -> None:
    config = mcp_config(lifecycle="shared")
    server = await start_server(config)
    starts = upstream_env.starts(tag)
    with trio.fail_after(90):
        first = (await _call(server, "up_instance", {})).output["instance"]
        old = set(processes_with(tag))
        tool_file = config / "tools.d" / "up.yaml"
        tool_file.write_text(tool_file.read_text().replace("startup_timeout: 20s", "startup_timeout: 21s"))
        # The old server is stopped, a new one started for the new file.
        await _until(lambda: len(_lines(starts)) >= 2 and not old & set(processes_with(tag)))
        second = (await _call(server, "up_instance", {})).output["instance"]
    assert first != second and _lines(starts)[-1] == second
