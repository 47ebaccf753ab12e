"""``lint`` semantics on small policies: shadowed vs overridden under deny-wins."""

from __future__ import annotations

from engine.policy import lint


def kinds(config):
    return {(f.kind, f.rule) for f in lint(config) if f.rule}


ALLOW = "  - id: a\n    effect: allow\n    subjects: {roles: [user]}\n    targets: {tools: [calc]}\n"
DENY = "  - id: d\n    effect: deny\n    subjects: {roles: [user]}\n    targets: {tools: [calc]}\n"


def test_deny_after_identical_allow_overrides_the_allow_and_is_not_shadowed(policy):
    found = kinds(policy(ALLOW + DENY))
    assert ("overridden", "a") in found
    assert not any(rule == "d" for _, rule in found)


def test_of_two_identical_rules_the_later_is_shadowed(policy):
    found = kinds(policy(ALLOW + ALLOW.replace("id: a", "id: b")))
    assert ("shadowed", "b") in found and ("shadowed", "a") not in found


def test_narrower_deny_does_not_override_a_broader_allow(policy):
    broad = "  - id: a\n    effect: allow\n    subjects: {roles: [user, admin]}\n    targets: {levels: [0, 1]}\n"
    assert not {k for k in kinds(policy(broad + DENY)) if k[0] in ("overridden", "shadowed")}


def test_a_conditional_rule_is_not_shadowed_by_a_stricter_conditional_one(policy):
    cond = "    conditions: [{argument: expression, prefix: '1'}]\n"
    found = kinds(policy(ALLOW + cond + ALLOW.replace("id: a", "id: b")))
    assert ("shadowed", "a") in found  # b (no conditions) covers a (conditional)
    assert ("shadowed", "b") not in found


def test_stricter_approval_is_not_shadowed_by_a_weaker_one(policy):
    user = "  - id: u\n    effect: require_approval\n    approver: user\n    subjects: {roles: [user]}\n" \
           "    targets: {tools: [calc]}\n"
    admin = user.replace("id: u", "id: x").replace("approver: user", "approver: admin")
    found = kinds(policy(user + admin))
    assert ("shadowed", "u") in found and ("shadowed", "x") not in found


def test_resource_glob_coverage(policy):
    wide = "  - id: w\n    effect: allow\n    subjects: {roles: [user]}\n    actions: [resource.read]\n" \
           "    targets: {resources: ['file://docs/*']}\n"
    deep = wide.replace("id: w", "id: n").replace("file://docs/*", "file://docs/**")
    found = kinds(policy(wide + deep))
    assert ("shadowed", "n") not in found  # * does not cover ** (sub-directories)
    assert ("shadowed", "w") in found  # ** covers *


def test_never_matching_resource_host_and_kind(policy):
    rules = ("  - id: r\n    effect: allow\n    subjects: {roles: [user]}\n    actions: [resource.read]\n"
             "    targets: {resources: ['db://nowhere/**']}\n"
             "  - id: k\n    effect: allow\n    subjects: {roles: [user]}\n    actions: [resource.read]\n"
             "    targets: {tools: [calc]}\n")
    found = kinds(policy(rules))
    assert ("never-matches", "r") in found and ("never-matches", "k") in found
