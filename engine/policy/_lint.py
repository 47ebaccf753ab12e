"""``policy lint``: mistakes in a policy set that loading alone does not catch.

Errors (exit 1): a rule that can never match anything (no subjects, targets
that match no declared tool or resource host, an action its targets exclude,
a condition on an argument no targeted tool accepts); a level-3 tool granted
to a role (every holder of the role) rather than to named subs.  Unknown
roles and tools are refused by the loader already; ``policy lint`` reports
them as errors too.

Warnings: conditions that compare paths as raw strings (*fragile*: ``./x``
and ``a/../x`` spell the same path; ``path_prefix`` normalises); denies whose
conditions can never be decided (they fail closed, so they deny everything they
target); rules that change no decision — *shadowed* and *overridden*; tools
no subject can call; declared roles no rule names; rules that reach a
level-3 tool only by a glob or a level (which never unlocks it); approvals
that are never stricter than the level; ``self_approval`` with a user approver.

What "shadowed" means here.  Rules are not first-match: a deny wins wherever
it is written and approvals combine to the strictest, so an earlier rule never
hides a later one by position.  A rule is *shadowed* when another rule of the
same kind already covers every request it matches (same or broader subjects,
actions and targets, and no more conditions) with the same or a stronger
outcome — removing it changes no decision (a deny by a broader deny; an allow
by any granting rule; a require_approval by one asking the same or a stricter
approver).  Of two identical rules the later is reported.  A granting rule is
*overridden* when a deny covers every request it matches: it never grants
anything.  A deny after an identical allow is therefore not shadowed — it is
the allow that is overridden.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..config.model import Condition, Config, PolicyRule
from ..globs import glob_matches, glob_regex
from ._analysis import cell, subjects
from ._decision import APPROVER_RANK, LEVEL_APPROVER
from ._engine import policy_rules
from ._match import condition_operator, has_any_targets, has_tool_targets, is_glob, tool_matches


@attrs.frozen(order=True)
class Finding:
    """One lint result, located at the rule (or tool) it is about."""

    source: str
    severity: str  # error | warning
    kind: str  # never-matches, level-3-broad, shadowed, overridden, uncovered-tool, ...
    message: str
    rule: str | None = None

    def sort_key(self) -> tuple[str, int, str]:
        file, _, line = self.source.rpartition(":")
        return (file, int(line) if line.isdigit() else 0, self.message)

    def __str__(self) -> str:
        return f"{self.source}: {self.severity}: {self.message} [{self.kind}]"

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "severity": self.severity, "kind": self.kind,
                "message": self.message, "rule": self.rule}


def _tool_set(rule: PolicyRule, config: Config) -> frozenset[str]:
    """The declared tools ``rule`` can match on a tool call (conditions aside)."""
    if "tool.call" not in rule.actions:
        return frozenset()
    targets = rule.targets
    if not has_tool_targets(rule):
        return frozenset() if targets.resources or targets.agents else frozenset(config.tools)
    return frozenset(
        name for name, tool in config.tools.items()
        if (not targets.tools or any(tool_matches(p, name) for p in targets.tools))
        and (not targets.levels or tool.permission_level in targets.levels)
    )


def _agent_set(rule: PolicyRule, config: Config) -> frozenset[str]:
    """The declared agents ``rule`` can match on a delegation (``agent.delegate``), conditions aside."""
    if "agent.delegate" not in rule.actions:
        return frozenset()
    targets = rule.targets
    if not (targets.agents or targets.levels):
        return frozenset() if targets.tools or targets.resources else frozenset(config.agents)
    return frozenset(
        name for name, agent in config.agents.items()
        if (not targets.agents or any(glob_matches(p, name) for p in targets.agents))
        and (not targets.levels or agent.delegation_level in targets.levels)
    )


def _unlocks(rule: PolicyRule, config: Config) -> frozenset[str]:
    """Level-3 tools this rule names exactly (what a grant needs to unlock them)."""
    return frozenset(name for name in _tool_set(rule, config)
                     if config.tools[name].permission_level == 3 and name in rule.targets.tools)


def _reads(rule: PolicyRule) -> bool:
    """Whether the rule can match a resource read at all."""
    return "resource.read" in rule.actions and (bool(rule.targets.resources) or not has_any_targets(rule))


def _read_patterns(rule: PolicyRule) -> tuple[str, ...]:
    return rule.targets.resources or ("*://**",)


def _hosts_reached(pattern: str, config: Config) -> list[str]:
    scheme, _, rest = pattern.partition("://")
    name = rest.partition("/")[0]
    return [host for host in (*config.resources, "board://session") if glob_matches(f"{scheme}://{name}", host)]


def _pattern_covers(wide: str, narrow: str) -> bool:
    # Does every URI ``narrow`` matches also match ``wide``?  Match wide against narrow's own
    # text, with narrow's "**" spelled so that it still crosses "/" (a "*" in wide must not absorb it).
    return glob_regex(wide).fullmatch(narrow.replace("**", "**/**")) is not None


def _covers(wide: PolicyRule, narrow: PolicyRule, config: Config, *, grant: bool) -> bool:
    """Whether ``wide`` matches every request ``narrow`` matches (and unlocks what it unlocks, for grants)."""
    if not set(narrow.subjects.roles) <= set(wide.subjects.roles):
        return False
    if not set(narrow.subjects.subs) <= set(wide.subjects.subs):
        return False
    if not all(condition in narrow.conditions for condition in wide.conditions):
        return False
    tools = _tool_set(narrow, config)
    if tools and not tools <= _tool_set(wide, config):
        return False
    agents = _agent_set(narrow, config)
    if agents and not agents <= _agent_set(wide, config):
        return False
    if grant and not _unlocks(narrow, config) <= _unlocks(wide, config):
        return False
    if _reads(narrow):
        if not _reads(wide):
            return False
        return all(any(_pattern_covers(w, n) for w in _read_patterns(wide)) for n in _read_patterns(narrow))
    return True


def _ref(rule: PolicyRule) -> str:
    return f"rule {rule.id} ({rule.source})"


def _never_matches(rule: PolicyRule, config: Config) -> Iterator[str]:
    if not rule.subjects.roles and not rule.subjects.subs:
        yield "its subjects list no role and no sub, so it matches nobody"
        return
    targets = rule.targets
    if "tool.call" in rule.actions and not _tool_set(rule, config):
        if not has_tool_targets(rule):
            yield "it lists action tool.call but its targets name only resources"
        else:
            yield "its tool targets match no declared tool (tools and levels together exclude every tool)"
    if "resource.read" in rule.actions:
        if has_tool_targets(rule) and not targets.resources:
            yield "it lists action resource.read but its targets name only tools or levels"
        for pattern in targets.resources:
            if not _hosts_reached(pattern, config):
                yield f"resource glob {pattern!r} matches no declared resource host"
    if rule.effect == "deny":
        return  # an undecidable condition makes a deny apply (fail closed): see _undecidable
    if rule.conditions and not _tool_set(rule, config):
        if _reads(rule):
            yield "it has conditions, which never hold for resource reads (a read has no arguments)"
        return
    for condition in rule.conditions:
        tools = [config.tools[name] for name in sorted(_tool_set(rule, config))]
        accepting = [
            tool for tool in tools
            if condition.argument in tool.parameters.get("properties", {})
            or tool.parameters.get("additionalProperties", True) is not False
        ]
        if tools and not accepting:
            yield f"its condition on argument {condition.argument!r} can never hold: no targeted tool accepts it"


_PATH_NAMES = frozenset({"path", "file", "filename", "dir", "directory", "folder"})


def _path_like(rule: PolicyRule, condition: Condition, config: Config) -> bool:
    """Whether the condition's argument looks like a path: by its operand, its name or its schema."""
    _op, operand = condition_operator(condition)
    operands = operand if isinstance(operand, tuple | list) else (operand,)
    if any(isinstance(o, str) and ("/" in o or "\\" in o or o.startswith(".")) for o in operands):
        return True
    name = condition.argument.lower()
    if name in _PATH_NAMES or name.endswith(("_path", "_file", "_dir", "path")):
        return True
    return any(
        config.tools[tool].parameters.get("properties", {}).get(condition.argument, {}).get("format") == "path"
        for tool in _tool_set(rule, config)
    )


def _fragile(rule: PolicyRule, config: Config) -> Iterator[str]:
    """Conditions that compare a path as a raw string: another spelling of the path slips past."""
    for condition in rule.conditions:
        op, _operand = condition_operator(condition)
        if op in ("equals", "one_of", "prefix", "matches") and _path_like(rule, condition, config):
            yield (f"condition on {condition.argument!r}: {op} compares the raw string, so './x' or 'a/../x' "
                   "name the same path another way; compare paths with path_prefix")


def _undecidable(rule: PolicyRule, config: Config) -> Iterator[str]:
    """A deny whose conditions can never be decided applies to everything it targets (fail closed)."""
    if rule.effect != "deny" or not rule.conditions:
        return
    if _reads(rule):
        yield ("its conditions cannot be decided on a resource read (a read has no arguments): "
               "it denies every read it targets")
    tools = [config.tools[name] for name in sorted(_tool_set(rule, config))]
    for condition in rule.conditions:
        if tools and not any(
            condition.argument in tool.parameters.get("properties", {})
            or tool.parameters.get("additionalProperties", True) is not False
            for tool in tools
        ):
            yield (f"no targeted tool accepts argument {condition.argument!r}, so its condition can never be "
                   "decided: it denies every call it targets")


def lint(config: Config) -> list[Finding]:
    """Every finding for ``config``'s policies, errors and warnings, sorted by place."""
    findings: list[Finding] = []
    rules = list(policy_rules(config))

    def add(rule: PolicyRule, severity: str, kind: str, message: str) -> None:
        findings.append(Finding(str(rule.source), severity, kind, f"rule {rule.id}: {message}", rule.id))

    dead = set()
    for rule in rules:
        for why in _never_matches(rule, config):
            add(rule, "error", "never-matches", f"can never match: {why}")
            dead.add(rule.id)
        if "tool.call" not in rule.actions and has_tool_targets(rule) and rule.targets.resources:
            add(rule, "warning", "ignored-targets",
                "targets.tools/levels are ignored: its actions do not include tool.call")
        if "resource.read" not in rule.actions and rule.targets.resources and has_tool_targets(rule):
            add(rule, "warning", "ignored-targets",
                "targets.resources are ignored: its actions do not include resource.read")
        for why in _fragile(rule, config):
            add(rule, "warning", "fragile-condition", why)
        for why in _undecidable(rule, config):
            add(rule, "warning", "undecidable-condition", why)
        if rule.effect == "deny":
            continue
        tools = _tool_set(rule, config)
        level3 = sorted(name for name in tools if config.tools[name].permission_level == 3)
        named = _unlocks(rule, config)
        for name in level3:
            if name in named and rule.subjects.roles:
                add(rule, "error", "level-3-broad",
                    f"grants level-3 tool {name} to role {', '.join(rule.subjects.roles)} (every holder of the role); "
                    "level 3 should name its callers (subjects.subs)")
            elif name not in named and has_tool_targets(rule):
                how = "a glob" if any(is_glob(p) and tool_matches(p, name) for p in rule.targets.tools) else "a level"
                add(rule, "warning", "level-3-unreachable",
                    f"reaches level-3 tool {name} only by {how}, which does not unlock it (name it exactly)")
        if rule.effect == "require_approval" and rule.approver:
            if rule.self_approval and rule.approver == "user":
                add(rule, "warning", "self-approval-noop", "self_approval has no effect with approver user "
                    "(a user approval is always the requester's own)")
            floors = [LEVEL_APPROVER[config.tools[name].permission_level] for name in tools
                      if config.tools[name].permission_level != 3]
            if tools and not _reads(rule) and not level3 and all(
                APPROVER_RANK[rule.approver] <= APPROVER_RANK[floor] for floor in floors
            ):
                add(rule, "warning", "no-stricter",
                    f"approver {rule.approver} is never stricter than the targeted tools' levels: it acts as an allow")

    # Shadowed and overridden: order-independent, see the module docstring.
    for index, rule in enumerate(rules):
        if rule.id in dead:
            continue
        if rule.effect != "deny":
            # Overridden first: it says more than "shadowed" (the rule grants nothing at all).
            denier = next((other for other in rules if other.effect == "deny" and other.id not in dead
                           and _covers(other, rule, config, grant=False)), None)
            if denier is not None:
                add(rule, "warning", "overridden",
                    f"never grants anything: {_ref(denier)} denies every request it matches")
                continue
        for other_index, other in enumerate(rules):
            if other is rule or other.id in dead:
                continue
            if (other.effect == "deny") != (rule.effect == "deny"):
                continue
            if rule.effect == "require_approval" and (
                other.effect != "require_approval"
                or APPROVER_RANK[other.approver or "none"] < APPROVER_RANK[rule.approver or "none"]
                or (rule.self_approval and not other.self_approval)
            ):
                continue
            grant = rule.effect != "deny"
            if not _covers(other, rule, config, grant=grant):
                continue
            mutual = _covers(rule, other, config, grant=grant) and other.effect == rule.effect and (
                other.approver == rule.approver)
            if mutual and other_index > index:
                continue  # identical: the later one is reported, against this one
            add(rule, "warning", "shadowed",
                f"changes no decision: {_ref(other)} already covers every request it matches")
            break

    for name in sorted(config.tools):
        tool = config.tools[name]
        if all(cell(config, subject, name).label == "deny" for subject in subjects(config)):
            hint = " (level 3: only a rule naming it and its callers unlocks it)" if tool.permission_level == 3 else ""
            findings.append(Finding(str(tool.source), "warning", "uncovered-tool",
                                    f"tool {name}: no rule lets anyone call it{hint}"))
    used = {role for rule in rules for role in rule.subjects.roles}
    for policy in config.policies:
        for role in sorted(set(policy.roles) - used):
            findings.append(Finding(str(policy.source), "warning", "unused-role",
                                    f"role {role} is declared but no rule names it"))
    return sorted(findings, key=Finding.sort_key)
