"""``agent.delegate`` and the session board in the policy engine and the ``policy`` commands.

- test_asking_an_agent_is_decided_at_its_delegation_level: levels 0-2 through the
  shipped rule (the level sets the approver), level 3 only where a rule names the agent
  in ``targets.agents`` (a glob does not unlock it).
- test_tool_and_resource_rules_do_not_grant_delegations: rules naming only tools or
  resources match no delegation, and a rule naming only agents matches no tool call.
- test_policy_commands_take_agent: ``explain``/``can-i``/``who-can --agent``; a
  mistyped agent gets a suggestion.
"""

from __future__ import annotations

import attrs
import pytest

from engine.cli.main import main
from engine.config import load_config
from engine.config.model import PolicyRule, Subjects, Targets
from engine.policy import decide
from tests.conftest import SHIPPED_CONFIG


@pytest.mark.parametrize(("level", "effect", "approver"), [
    (0, "allow", "none"), (1, "require_approval", "user"), (2, "require_approval", "admin"), (3, "deny", "none"),
])
def test_asking_an_agent_is_decided_at_its_delegation_level(level: int, effect: str, approver: str) -> None:
    config = load_config(SHIPPED_CONFIG)
    weather = attrs.evolve(config.agents["weather"], delegation_level=level)
    config = attrs.evolve(config, agents={**config.agents, "weather": weather})
    decision = decide(config, "alice", {"user"}, "agent.delegate", "weather", {"agent": "weather", "message": "hi"})
    assert (decision.effect, decision.approver) == (effect, approver)
    if level == 3:
        glob = PolicyRule(id="glob", effect="allow", subjects=Subjects(roles=("user",)), actions=("agent.delegate",),
                          targets=Targets(agents=("weath*",)))
        named = attrs.evolve(glob, id="named", targets=Targets(agents=("weather",)))
        globbed = attrs.evolve(config, policies=(attrs.evolve(config.policies[0], rules=(glob,)),))
        assert decide(globbed, "alice", {"user"}, "agent.delegate", "weather", {}).effect == "deny"
        unlocked = attrs.evolve(config, policies=(attrs.evolve(config.policies[0], rules=(named,)),))
        assert decide(unlocked, "alice", {"user"}, "agent.delegate", "weather", {}).effect == "allow"


def test_tool_and_resource_rules_do_not_grant_delegations() -> None:
    config = load_config(SHIPPED_CONFIG)
    only_tools = PolicyRule(id="t", effect="allow", subjects=Subjects(roles=("user",)),
                            actions=("tool.call", "agent.delegate"), targets=Targets(tools=("calculator",)))
    only_agents = PolicyRule(id="a", effect="allow", subjects=Subjects(roles=("user",)),
                             actions=("tool.call", "agent.delegate"), targets=Targets(agents=("weather",)))
    for rule, delegation, call in ((only_tools, "deny", "allow"), (only_agents, "allow", "deny")):
        alone = attrs.evolve(config, policies=(attrs.evolve(config.policies[0], rules=(rule,)),))
        assert decide(alone, "alice", {"user"}, "agent.delegate", "weather", {}).effect == delegation
        assert decide(alone, "alice", {"user"}, "tool.call", "calculator", {}).effect == call


def test_policy_commands_take_agent(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(SHIPPED_CONFIG)
    assert main(["policy", "can-i", "--config", config, "--role", "user", "--agent", "bookkeeper"]) == 0
    assert capsys.readouterr().out == "yes, with the user's approval\n"
    assert main(["policy", "can-i", "--config", config, "--sub", "mallory", "--agent", "weather"]) == 1
    assert capsys.readouterr().out.startswith("no: no rule allows mallory (no roles) to ask agent weather (level 0)")
    assert main(["policy", "explain", "--config", config, "--role", "user", "--agent", "weather"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("request:  roles user to ask agent weather (level 0)\n")
    assert "decision: allow\n" in out and "MATCH agents-ask-agents" in out
    assert main(["policy", "who-can", "--config", config, "--agent", "weather"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "role admin: without approval  [agents-ask-agents (policies/default.yaml:19)]",
        "role user: without approval  [agents-ask-agents (policies/default.yaml:19)]",
    ]
    assert main(["policy", "can-i", "--config", config, "--role", "user", "--resource", "board://session"]) == 0
    assert capsys.readouterr().out == "yes, without approval\n"
    assert main(["policy", "can-i", "--config", config, "--role", "user", "--agent", "wether"]) == 2
    assert "no agent named 'wether' (did you mean 'weather'?" in capsys.readouterr().err
