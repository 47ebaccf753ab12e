"""Each rule of the decision semantics, on the engine directly (tools: calc L0, fetch L1, shell L2, wipe L2, pay L3)."""

from __future__ import annotations

import pytest

from engine.decision import decide
from engine.policy import explain, policy_revision
from tests.policy.conftest import ADMIN, ALLOW_ALL_LOW, USER


def test_default_deny(policy):
    config = policy("  - id: other\n    effect: allow\n    subjects: {roles: [admin]}\n")
    decision = decide(config, "alice", USER, "tool.call", "calc", {"expression": "1"})
    assert (decision.effect, decision.approver, decision.rules, decision.deciding_rule) == ("deny", "none", (), None)
    assert "denied by default" in decision.reason


def test_unknown_tool_is_denied_not_raised(policy):
    config = policy(ALLOW_ALL_LOW)
    assert decide(config, "a", USER, "tool.call", "nope", {}).reason == "unknown tool 'nope'"
    assert decide(config, "a", USER, "exec", "calc", {}).effect == "deny"


@pytest.mark.parametrize(("tool", "effect", "approver"), [
    ("calc", "allow", "none"), ("fetch", "require_approval", "user"), ("shell", "require_approval", "admin"),
])
def test_level_sets_the_minimum_approval(policy, tool, effect, approver):
    decision = decide(policy(ALLOW_ALL_LOW), "alice", USER, "tool.call", tool, {})
    assert (decision.effect, decision.approver) == (effect, approver)
    assert decision.deciding_rule is not None and decision.deciding_rule.id == "low"
    assert decision.deciding_rule.source == "policies/p.yaml:7"


def test_reason_names_rule_file_line_and_approval(policy):
    decision = decide(policy(ALLOW_ALL_LOW), "alice", USER, "tool.call", "shell", {})
    assert decision.reason == "allowed by rule low (policies/p.yaml:7); level 2 requires an admin's approval"


def test_deny_wins_whatever_the_order(policy):
    deny = "  - id: no-shell\n    effect: deny\n    subjects: {roles: [user]}\n    targets: {tools: [shell]}\n"
    for rules in (ALLOW_ALL_LOW + deny, deny + ALLOW_ALL_LOW):
        decision = decide(policy(rules), "alice", USER, "tool.call", "shell", {})
        assert decision.effect == "deny"
        assert decision.deciding_rule is not None and decision.deciding_rule.id == "no-shell"
        assert set(decision.rule_ids) == {"low", "no-shell"}
        # Admins are not in the deny: still allowed.
        assert decide(policy(rules), "root", ADMIN, "tool.call", "shell", {}).effect == "require_approval"


def test_require_approval_makes_stricter(policy):
    stricter = ALLOW_ALL_LOW + (
        "  - id: calc-by-admin\n    effect: require_approval\n    approver: admin\n"
        "    subjects: {roles: [user]}\n    targets: {tools: [calc]}\n")
    decision = decide(policy(stricter), "alice", USER, "tool.call", "calc", {})
    assert (decision.effect, decision.approver) == ("require_approval", "admin")
    assert decision.deciding_rule.id == "calc-by-admin"
    assert "rule calc-by-admin (policies/p.yaml:11) requires an admin's approval" in decision.reason


def test_require_approval_never_weaker(policy):
    weaker = ALLOW_ALL_LOW + (
        "  - id: shell-by-user\n    effect: require_approval\n    approver: user\n"
        "    subjects: {roles: [user]}\n    targets: {tools: [shell]}\n")
    decision = decide(policy(weaker), "alice", USER, "tool.call", "shell", {})
    assert (decision.effect, decision.approver) == ("require_approval", "admin")


def test_require_approval_alone_grants_with_its_approver(policy):
    config = policy("  - id: fetch-admin\n    effect: require_approval\n    approver: admin\n"
                    "    subjects: {roles: [user]}\n    targets: {tools: [fetch]}\n")
    decision = decide(config, "alice", USER, "tool.call", "fetch", {})
    assert (decision.effect, decision.approver) == ("require_approval", "admin")


@pytest.mark.parametrize("targets", ["{levels: [3]}", "{tools: ['pa*']}", "{tools: ['*']}", "{}"])
def test_level_3_is_not_unlocked_by_globs_or_levels(policy, targets):
    config = policy(f"  - id: broad\n    effect: allow\n    subjects: {{subs: [alice]}}\n    targets: {targets}\n")
    decision = decide(config, "alice", frozenset(), "tool.call", "pay", {"amount": 1})
    assert decision.effect == "deny"
    assert "level 3" in decision.reason and "does not unlock" in decision.reason


def test_level_3_runs_where_a_rule_names_it_with_that_rules_approval(policy):
    named = "  - id: alice-pays\n    effect: allow\n    subjects: {subs: [alice]}\n    targets: {tools: [pay]}\n"
    config = policy(named)
    decision = decide(config, "alice", frozenset(), "tool.call", "pay", {"amount": 1})
    assert (decision.effect, decision.approver, decision.deciding_rule.id) == ("allow", "none", "alice-pays")
    assert decide(config, "bob", frozenset(), "tool.call", "pay", {"amount": 1}).effect == "deny"
    approved = policy(named.replace("effect: allow", "effect: require_approval\n    approver: user"))
    decision = decide(approved, "alice", frozenset(), "tool.call", "pay", {"amount": 1})
    assert (decision.effect, decision.approver) == ("require_approval", "user")


def test_level_3_named_for_a_role(policy):
    config = policy("  - id: admins-pay\n    effect: require_approval\n    approver: admin\n"
                    "    subjects: {roles: [admin]}\n    targets: {tools: [pay]}\n")
    assert decide(config, "root", ADMIN, "tool.call", "pay", {"amount": 1}).approver == "admin"
    assert decide(config, "alice", USER, "tool.call", "pay", {"amount": 1}).effect == "deny"


def test_subs_and_roles(policy):
    config = policy("  - id: alice-calc\n    effect: allow\n    subjects: {subs: [alice]}\n"
                    "    targets: {tools: [calc]}\n")
    assert decide(config, "alice", frozenset(), "tool.call", "calc", {}).effect == "allow"
    assert decide(config, "alicia", USER, "tool.call", "calc", {}).effect == "deny"
    assert decide(config, None, frozenset({"alice"}), "tool.call", "calc", {}).effect == "deny"  # a role is not a sub


CONDITIONS = [
    ("{argument: command, equals: ls}", {"command": "ls"}, {"command": "ls -l"}),
    ("{argument: command, one_of: [ls, pwd]}", {"command": "pwd"}, {"command": "rm"}),
    ("{argument: command, prefix: 'docs/'}", {"command": "docs/a.txt"}, {"command": "docs/../etc/passwd"}),
    ("{argument: command, matches: 'ls( -l)?'}", {"command": "ls -l"}, {"command": "ls -la"}),  # fullmatch
    ("{argument: command, max: 10}", {"command": 10}, {"command": 10.5}),
    ("{argument: command, max: 10}", {"command": 3}, {"command": True}),  # a boolean is not a number
    ("{argument: command, equals: 1}", {"command": 1}, {"command": True}),
    ("{argument: command, equals: ls}", {"command": "ls"}, {}),  # a missing argument never matches
]


@pytest.mark.parametrize(("condition", "good", "bad"), CONDITIONS)
def test_conditions(policy, condition, good, bad):
    config = policy("  - id: cond\n    effect: allow\n    subjects: {roles: [user]}\n"
                    f"    targets: {{tools: [shell]}}\n    conditions: [{condition}]\n")
    assert decide(config, "a", USER, "tool.call", "shell", good).effect == "require_approval"
    denied = explain(config, "a", USER, "tool.call", "shell", bad)
    assert denied.decision.effect == "deny"
    assert denied.considered[0].miss.aspect == "condition"


def test_unknown_arguments_assume_granting_conditions_only(policy):
    config = policy(
        "  - id: cond\n    effect: allow\n    subjects: {roles: [user]}\n    targets: {tools: [calc]}\n"
        "    conditions: [{argument: expression, prefix: '1'}]\n"
        "  - id: no-shell-rm\n    effect: deny\n    subjects: {roles: [user]}\n    targets: {tools: [shell]}\n"
        "    conditions: [{argument: command, prefix: rm}]\n" + ALLOW_ALL_LOW.replace("- id: low", "- id: low2"))
    listed = decide(config, "a", USER, "tool.call", "calc")
    assert listed.effect == "allow" and listed.conditional
    assert decide(config, "a", USER, "tool.call", "shell").effect == "require_approval"
    assert decide(config, "a", USER, "tool.call", "shell", {"command": "rm -rf"}).effect == "deny"


def test_resource_globs(policy):
    config = policy("  - id: top\n    effect: allow\n    subjects: {roles: [user]}\n    actions: [resource.read]\n"
                    "    targets: {resources: ['file://docs/*.txt']}\n"
                    "  - id: deep\n    effect: allow\n    subjects: {roles: [admin]}\n    actions: [resource.read]\n"
                    "    targets: {resources: ['file://docs/**']}\n")
    read = lambda roles, uri: decide(config, "a", roles, "resource.read", uri).effect  # noqa: E731
    assert read(USER, "file://docs/a.txt") == "allow"
    assert read(USER, "file://docs/sub/a.txt") == "deny"  # * does not cross /
    assert read(ADMIN, "file://docs/sub/a.txt") == "allow"  # ** does
    assert read(ADMIN, "file://other/a.txt") == "deny"


def test_resources_are_level_0_unless_a_rule_asks(policy):
    config = policy("  - id: read\n    effect: allow\n    subjects: {roles: [user]}\n    actions: [resource.read]\n"
                    "  - id: ask\n    effect: require_approval\n    approver: user\n    subjects: {roles: [user]}\n"
                    "    actions: [resource.read]\n    targets: {resources: ['file://docs/private/**']}\n")
    assert decide(config, "a", USER, "resource.read", "file://docs/a.txt").effect == "allow"
    decision = decide(config, "a", USER, "resource.read", "file://docs/private/x")
    assert (decision.effect, decision.approver) == ("require_approval", "user")


def test_targets_of_the_other_kind_do_not_match(policy):
    config = policy("  - id: both\n    effect: allow\n    subjects: {roles: [user]}\n"
                    "    actions: [tool.call, resource.read]\n    targets: {tools: [calc]}\n")
    assert decide(config, "a", USER, "tool.call", "calc", {}).effect == "allow"
    assert decide(config, "a", USER, "resource.read", "file://docs/a.txt").effect == "deny"


def test_self_approval(policy):
    base = ALLOW_ALL_LOW + ("  - id: own\n    effect: require_approval\n    approver: admin\n"
                            "    subjects: {roles: [admin]}\n    targets: {tools: [shell]}\n")
    assert decide(policy(base), "root", ADMIN, "tool.call", "shell", {}).self_approval is False
    config = policy(base + "    self_approval: true\n")
    decision = decide(config, "root", ADMIN, "tool.call", "shell", {})
    assert decision.self_approval is True and "approve it themselves" in decision.reason
    # The level alone never allows it.
    assert decide(config, "alice", USER, "tool.call", "shell", {}).self_approval is False


def test_self_approval_only_on_require_approval(policy):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        policy("  - id: x\n    effect: allow\n    self_approval: true\n    subjects: {roles: [user]}\n")
    assert caught.value.problems[0].file == "policies/p.yaml"


def test_revision_is_a_hash_of_the_policy_bytes(policy):
    # Each hashed right after its load: the files are rewritten in place by the next load.
    first = policy(ALLOW_ALL_LOW)
    first_revision = policy_revision(first)
    assert policy_revision(policy(ALLOW_ALL_LOW)) == first_revision
    assert policy_revision(policy(ALLOW_ALL_LOW + "  # a comment changes the bytes\n")) != first_revision
    # Cached per Config: the revision a loaded config reports does not follow later edits.
    assert decide(first, "a", USER, "tool.call", "calc", {}).policy_revision == first_revision
    assert first_revision.startswith("sha256:")


def test_shipped_policy_keeps_the_server_flows(tmp_path):
    from engine.config import load_config

    from .conftest import SHIPPED

    config = load_config(SHIPPED)
    labels = {tool: decide(config, "alice", USER, "tool.call", tool, {}).label for tool in config.tools}
    assert labels["calculator"] == "allow" and labels["http_get"] == "user"
    assert labels["shell"] == "admin" and labels["send_payment"] == "deny"


def test_one_glob_syntax_for_tools_and_resources(policy, tmp_path):
    from engine.errors import ConfigError

    config = policy("  - id: globs\n    effect: allow\n    subjects: {roles: [user]}\n"
                    "    actions: [tool.call, resource.read]\n"
                    "    targets: {tools: ['?al*'], resources: ['file://docs/[a].txt']}\n")
    assert decide(config, "a", USER, "tool.call", "calc", {}).effect == "allow"  # ? and * as for URIs
    read = lambda uri: decide(config, "a", USER, "resource.read", uri).effect  # noqa: E731
    assert read("file://docs/[a].txt") == "allow"  # [ is literal, as for tool names
    assert read("file://docs/a.txt") == "deny"
    with pytest.raises(ConfigError, match="unknown tool 'c\\[a\\]lc'"):  # not a character class
        policy("  - id: cls\n    effect: allow\n    subjects: {roles: [user]}\n    targets: {tools: ['c[a]lc']}\n")


def test_the_loader_warns_for_a_level_3_tool_reached_only_by_a_glob(policy):
    config = policy("  - id: star\n    effect: allow\n    subjects: {subs: [alice]}\n    targets: {tools: ['pay*']}\n")
    assert any("tools.d/pay.yaml" in w and "no policy rule allows" in w for w in config.warnings)
    named = policy("  - id: named\n    effect: allow\n    subjects: {subs: [alice]}\n    targets: {tools: [pay]}\n")
    assert not any("tools.d/pay.yaml" in w for w in named.warnings)


def test_the_revision_is_hashed_at_load_and_never_re_read(policy, tmp_path):
    from engine.policy import revision_of

    first = policy(ALLOW_ALL_LOW)
    loaded = revision_of(tmp_path / "cfg", ["policies/p.yaml"])
    (tmp_path / "cfg" / "policies" / "p.yaml").write_text("edited after the load")
    assert revision_of(tmp_path / "cfg", ["policies/p.yaml"]) != loaded
    assert policy_revision(first) == loaded
    assert decide(first, "a", USER, "tool.call", "calc", {}).policy_revision == loaded
