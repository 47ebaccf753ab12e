"""No client can hold the event loop with CPU-heavy input (issue 11, item 2).

Each test performs one attack while another client makes round trips on the same
server; the attack must end (answered or refused) and the other client must be served.
Under Python's backtracking `re` and plain jsonschema each attack held the event loop
for seconds to hours; the latencies are measured by bench/bench_attacks.py, not here.

- test_a_rule_that_backtracks_on_plain_re_is_linear: the shipped assistant's rule
  `\\b(?:list|show)\\b.*\\bfiles\\b` against "list " x 13,000 (quadratic under `re`: 23 s for
  10,000); the turn completes with the fallback answer.
- test_rules_match_a_megabyte_in_linear_time: the same rules on 1 MB of text (hours under `re`).
- test_an_exponential_pattern_in_an_offered_schema: a client offers a tool whose schema has
  `pattern: ^(a+)+$` and calls it with 30 a's and '!'; the call is refused as invalid.
- test_a_quadratic_unique_items_check_is_linear: `uniqueItems` over 10,000 distinct objects
  (quadratic in jsonschema) is checked, and the call refused for its other problem.
- test_a_validation_past_its_budget_is_stopped: a check that costs seconds (40,000 items,
  each valid only under the last of 200 `anyOf` branches) is stopped at its deadline and
  the call refused with a message saying so.
- test_oversized_and_unsupported_offers_are_refused: a 600 KiB schema (`too_large`), more
  tools than allowed (`too_large`), a lookahead pattern and `unevaluatedProperties`
  (`invalid_message`, with the reason) are refused when offered.
- test_a_user_message_over_the_cap_is_refused: a 100 KiB message is `too_large` before any
  model sees it.
- test_a_policy_condition_is_matched_in_linear_time: a `matches` condition that backtracks
  exponentially under `re`, against a client-chosen argument, is decided at once.
- test_a_rule_re2_cannot_run_is_a_located_config_error: a rule with a backreference is
  refused at load time with its file and line.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.client import Client, ServerError, open_client
from engine.config import load_config
from engine.errors import ConfigError
from engine.models.rules import RulesProvider
from engine.protocol import AgentResult, ClientToolList, ErrorFrame, OfferedTool, new_id
from tests.conftest import REPO, copy_shipped
from tests.engine.conftest import RunningServer
from tests.security.conftest import reply_to


async def while_served(server: RunningServer, attack: Callable[[Client], Awaitable[Any]]) -> tuple[Any, int]:
    """Run ``attack`` on one connection while another makes tool_list round trips.

    Returns the attack's result and how many round trips the other client completed
    (at least one: it keeps going until the attack has ended, then makes one more).
    """
    done = trio.Event()
    outcome: list[Any] = []
    trips = 0
    async with open_client(server.url, server.token("mallory")) as attacker, \
            open_client(server.url, server.token("bob")) as other:

        async def attacking() -> None:
            outcome.append(await attack(attacker))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attacking)
            while True:
                finished = done.is_set()
                assert (await other.list_tools()).tools
                trips += 1
                if finished:
                    break
    return outcome[0], trips


async def call_raw(client: Client, name: str, arguments: dict[str, Any]) -> AgentResult:
    frame_id = new_id()
    await client.send_raw(json.dumps({"type": "tool_call", "id": frame_id,
                                      "payload": {"name": name, "arguments": arguments}}))
    while True:
        answer = await reply_to(client, frame_id)
        if isinstance(answer, AgentResult):
            return answer
        assert not isinstance(answer, ErrorFrame), answer


def offered(name: str, parameters: dict[str, Any]) -> OfferedTool:
    return OfferedTool(name=name, description="offered by the attacker", parameters=parameters)


async def offer(client: Client, *tools: OfferedTool) -> None:
    """Offer, then make sure the offer was taken (a request after it is answered)."""
    await client.offer_tools(tools)
    await client.list_tools()


async def test_a_rule_that_backtracks_on_plain_re_is_linear(server: RunningServer) -> None:
    async def attack(client: Client) -> str:
        sid = (await client.start_session("assistant")).session_id
        return (await client.converse(sid, "list " * 13_000)).response.content

    with trio.fail_after(60):
        answer, trips = await while_served(server, attack)
    assert answer.startswith("I can tell the time") and trips >= 1


def test_rules_match_a_megabyte_in_linear_time() -> None:
    config = load_config(REPO)
    provider = RulesProvider(config.agents["assistant"].model)  # type: ignore[arg-type]
    assert provider._match("list " * 200_000) is None
    found = provider._match("please " * 100_000 + "list my files")
    assert found is not None and found[0].tool == "list_files"


async def test_an_exponential_pattern_in_an_offered_schema(server: RunningServer) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}

    async def attack(client: Client) -> AgentResult:
        await offer(client, offered("get_location", schema))
        return await call_raw(client, "get_location", {"s": "a" * 30 + "!"})

    with trio.fail_after(60):
        result, _ = await while_served(server, attack)
    assert str(result.status) == "error"
    assert "does not match '^(a+)+$'" in json.dumps(result.output)


async def test_a_quadratic_unique_items_check_is_linear(server: RunningServer) -> None:
    schema = {"type": "object", "properties": {"v": {"type": "array", "uniqueItems": True, "maxItems": 5}}}

    async def attack(client: Client) -> AgentResult:
        await offer(client, offered("get_location", schema))
        return await call_raw(client, "get_location", {"v": [{"n": index} for index in range(10_000)]})

    with trio.fail_after(60):
        result, _ = await while_served(server, attack)
    problems = result.output["problems"]  # type: ignore[index]
    assert any("is too long" in problem for problem in problems)
    assert not any("non-unique" in problem for problem in problems)


async def test_a_validation_past_its_budget_is_stopped(server: RunningServer) -> None:
    branches = [{"const": value} for value in range(200)]
    schema = {"type": "object", "properties": {"v": {"type": "array", "items": {"anyOf": branches}}}}

    async def attack(client: Client) -> AgentResult:
        await offer(client, offered("get_location", schema))
        return await call_raw(client, "get_location", {"v": [199] * 40_000})

    with trio.fail_after(60):
        result, _ = await while_served(server, attack)
    assert result.output["problems"] == [  # type: ignore[index]
        "arguments: checking them against the tool's schema took longer than allowed; send smaller arguments"
    ]


@pytest.mark.parametrize(
    ("tools", "code", "message"),
    [
        ([offered("big", {"type": "object", "description": "x" * 600 * 1024})], "too_large",
         "at most 65536 are accepted"),
        ([offered(f"t{index}", {"type": "object"}) for index in range(65)], "too_large", "at most 64"),
        ([offered("look", {"type": "object", "properties": {"s": {"pattern": "^(?=a)"}}})], "invalid_message",
         "no backreferences or lookarounds"),
        ([offered("uneval", {"type": "object", "unevaluatedProperties": False})], "invalid_message",
         "unevaluatedProperties is not supported"),
    ],
)
async def test_oversized_and_unsupported_offers_are_refused(
    server: RunningServer, tools: list[OfferedTool], code: str, message: str
) -> None:
    async def attack(client: Client) -> Any:
        frame_id = await client.send(ClientToolList(id=new_id(), tools=tuple(tools)))
        return await reply_to(client, frame_id)

    with trio.fail_after(60):
        error, _ = await while_served(server, attack)
    assert isinstance(error, ErrorFrame)
    assert str(error.code) == code and message in error.message


async def test_a_user_message_over_the_cap_is_refused(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            with pytest.raises(ServerError) as refused:
                await client.converse(sid, "x" * 100 * 1024)
            assert refused.value.code == "too_large" and "65536 bytes" in refused.value.message
            assert (await client.converse(sid, "hello")).response.content.startswith("Hello")


def test_a_rule_re2_cannot_run_is_a_located_config_error(tmp_path: Path) -> None:
    for name in ("agents.d", "tools.d", "resources.d", "policies"):
        copy_shipped(name, tmp_path / name)
    agent = tmp_path / "agents.d" / "assistant.yaml"
    text = agent.read_text()
    agent.write_text(text.replace(r"'(?i)^\s*(hi|hello|hey)\b'", r"'(?i)^(hi)\s+\1'"))
    line = 1 + agent.read_text().splitlines().index(r"    - match: '(?i)^(hi)\s+\1'")
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert f"agents.d/assistant.yaml:{line}:" in str(refused.value)
    assert "invalid escape sequence: \\1" in str(refused.value)


def test_a_policy_condition_is_matched_in_linear_time(tmp_path: Path) -> None:
    """A `matches` condition that backtracks exponentially under `re` ((a|aa)*c on 40 a's:
    ~10^8 steps) against an argument the client chose: decided at once, as a miss."""
    from engine.decision import decide

    for name in ("agents.d", "tools.d", "resources.d", "policies"):
        copy_shipped(name, tmp_path / name)
    (tmp_path / "policies" / "shell-pattern.yaml").write_text(
        "name: shell-pattern\ndescription: Deny shell commands of a shape (test).\nrules:\n"
        "  - id: odd-commands\n    effect: deny\n    subjects: {roles: [user]}\n    targets: {tools: [shell]}\n"
        "    conditions: [{argument: command, matches: '(a|aa)*c'}]\n"
    )
    config = load_config(tmp_path)
    decision = decide(config, "alice", frozenset({"user"}), "tool.call", "shell", {"command": "a" * 40})
    assert decision.effect == "require_approval"  # the deny did not match; level 2 asks an admin
    assert decide(config, "alice", frozenset({"user"}), "tool.call", "shell", {"command": "aac"}).effect == "deny"
