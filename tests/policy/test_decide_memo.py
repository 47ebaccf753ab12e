"""Decisions remembered per configuration (engine.policy._engine._Remembered) are the ones
the full evaluation gives, and only those that cannot depend on the arguments are remembered.

- with no conditional rule in play, the first and the remembered decision of each request
  equal ``explain``'s, whatever the arguments (and ``None``: listing);
- a rule with conditions that applies to the request keeps every call evaluated: the
  same subject and tool get allow, then deny, then allow as the arguments change, and a
  conditional deny for one role does not leak into another role's remembered answer;
- a reload (a new configuration object) is decided under its own policy at once.
"""

from __future__ import annotations

from engine.decision import decide
from engine.policy import explain
from tests.policy.conftest import ADMIN, ALLOW_ALL_LOW, USER


def _explained(config, sub, roles, tool, arguments):
    result = explain(config, sub, roles, "tool.call", tool, arguments)
    return getattr(result, "decision", result)  # a bare Decision for an unknown tool


def test_remembered_decisions_are_the_evaluated_ones(policy):
    config = policy(ALLOW_ALL_LOW)
    for tool in ("calc", "fetch", "shell", "pay", "nope"):
        for roles in (USER, ADMIN, frozenset()):
            for arguments in ({"expression": "1"}, {}, None, {"expression": "1"}):
                assert decide(config, "alice", roles, "tool.call", tool, arguments) == \
                    _explained(config, "alice", roles, tool, arguments), (tool, roles, arguments)


def test_conditional_rules_keep_each_call_evaluated(policy):
    config = policy(
        ALLOW_ALL_LOW
        + "  - id: no-rm\n    effect: deny\n    subjects: {roles: [user]}\n    targets: {tools: [shell]}\n"
        "    conditions: [{argument: command, prefix: rm}]\n"
    )
    for _ in range(2):
        assert decide(config, "alice", USER, "tool.call", "shell", {"command": "ls"}).effect == "require_approval"
        denied = decide(config, "alice", USER, "tool.call", "shell", {"command": "rm -rf /"})
        assert denied.effect == "deny" and denied.deciding_rule.id == "no-rm"
        # Not known (listing): a conditional deny is not assumed.
        assert decide(config, "alice", USER, "tool.call", "shell", None).effect == "require_approval"
        # Admins are not under the deny: their answer does not depend on the command, and is remembered.
        assert decide(config, "root", ADMIN, "tool.call", "shell", {"command": "rm -rf /"}).effect == \
            "require_approval"


def test_a_reload_is_decided_under_its_own_policy(policy):
    before = policy(ALLOW_ALL_LOW)
    assert decide(before, "alice", USER, "tool.call", "calc", {}).effect == "allow"
    after = policy("  - id: admins-only\n    effect: allow\n    subjects: {roles: [admin]}\n")
    assert decide(after, "alice", USER, "tool.call", "calc", {}).effect == "deny"
    assert decide(before, "alice", USER, "tool.call", "calc", {}).effect == "allow"
