"""Whether one rule matches one request, and if not, the first reason why not.

The one place policy matching lives: the engine, ``policy`` commands, lint and
the config loader's "no rule allows this tool" warning all ask here.  Pure
functions over the config model.  The order of the checks is the order
``policy explain`` reports them in: subject, action, target, condition.

Targets by kind: a ``tool.call`` is matched by ``targets.tools`` and
``targets.levels`` (each given list must match), a ``resource.read`` by
``targets.resources``.  A rule with no targets at all matches every target of
its actions; a rule whose targets name only the other kind matches none of
this kind (``targets: {resources: [...]}`` never matches a tool call).  Tool
names and resource URIs are matched with the same globs (:mod:`engine.globs`).

Conditions (every one must hold for the rule to match):

- ``equals``, ``one_of``: the value, with a boolean never equal to a number;
- ``prefix``: a string that starts with the operand; never holds for a value
  with a ``..`` segment (it could climb out of the prefix);
- ``path_prefix``: the value is a path at or under the operand, compared
  segment by segment after normalisation (``.``, ``..`` and repeated ``/``
  collapsed, as the kernel would for a path without symlinks).  A path that
  climbs above its start, holds a backslash or a control character, or is
  absolute where the operand is relative (or the reverse) cannot be placed;
- ``matches``: a string the regular expression matches in full (RE2 syntax,
  linear in the value: no backreferences or lookarounds, checked at load);
- ``max``: a number (not a boolean) at most the operand.

``prefix`` and ``matches`` compare raw strings, so in a *deny* rule a value not
in normal path form (``.``, ``..`` or empty segments, a backslash) cannot be
decided: ``./secret/x`` and ``x/../secret/x`` name what ``secret/`` names.
``path_prefix`` is the condition meant for paths; ``policy lint`` says so.

Failing closed: when a condition of a **deny** rule cannot be decided — the
argument is missing, of a type the operator cannot compare, or a path that
cannot be placed — the condition counts as holding, so the deny applies.  For
a granting rule the same condition never holds.  A resource read carries no
arguments, so a deny with conditions applies to every read it targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..config.model import Condition, PolicyRule
from ..globs import GLOB_CHARS, glob_matches
from ..linear_re import compile_linear


@attrs.frozen
class Request:
    """One question put to the policy: may ``sub`` holding ``roles`` do ``action`` on ``target``?

    ``level`` is the tool's permission level (resources have none: 0).
    ``arguments`` is ``None`` when not known yet (listing tools): then a
    permitting rule's conditions are assumed to hold and a deny's are not, so
    the answer is "allowed for some arguments".
    """

    sub: str | None
    roles: frozenset[str]
    action: str
    target: str
    level: int = 0
    arguments: Mapping[str, Any] | None = None

    @property
    def is_tool(self) -> bool:
        return self.action == "tool.call"

    @property
    def is_delegation(self) -> bool:
        return self.action == "agent.delegate"

    @property
    def has_level(self) -> bool:
        """Tool calls and delegations have a permission level; reads have none."""
        return self.is_tool or self.is_delegation

    def describe(self) -> str:
        """``alice (roles user) to call shell (level 2)``, for reasons."""
        roles = f"roles {', '.join(sorted(self.roles))}" if self.roles else "no roles"
        who = f"{self.sub} ({roles})" if self.sub else roles
        if self.is_delegation:
            what = f"ask agent {self.target} (level {self.level})"
        elif self.action == "board.append":
            what = f"post to {self.target}"
        else:
            what = f"call {self.target} (level {self.level})" if self.is_tool else f"read {self.target}"
        return f"{who} to {what}"


@attrs.frozen
class Miss:
    """Why a rule did not match: the aspect (subject, action, target, condition) and a sentence."""

    aspect: str
    why: str

    def __str__(self) -> str:
        return f"{self.aspect}: {self.why}"


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


def resource_matches(pattern: str, uri: str) -> bool:
    return glob_matches(pattern, uri)


def tool_matches(pattern: str, name: str) -> bool:
    return glob_matches(pattern, name)


def names_tool(rule: PolicyRule, tool: str) -> bool:
    """Whether ``rule`` names ``tool`` exactly (not by a glob, not by a level): what unlocks level 3."""
    return tool in rule.targets.tools


def names_target(rule: PolicyRule, request: Request) -> bool:
    """Whether ``rule`` names the request's tool, or the agent it asks, exactly: what unlocks level 3."""
    return request.target in (rule.targets.agents if request.is_delegation else rule.targets.tools)


def may_grant_tool(rule: PolicyRule, name: str, level: int) -> bool:
    """Whether ``rule`` could let someone call tool ``name`` of ``level`` (subjects and conditions aside).

    A deny never grants; a level-3 tool is granted only by a rule naming it exactly.
    """
    if rule.effect == "deny" or "tool.call" not in rule.actions:
        return False
    if level == 3 and not names_tool(rule, name):
        return False
    return target_miss(rule, Request(None, frozenset(), "tool.call", name, level)) is None


def has_tool_targets(rule: PolicyRule) -> bool:
    return bool(rule.targets.tools or rule.targets.levels)


def has_any_targets(rule: PolicyRule) -> bool:
    return bool(rule.targets.tools or rule.targets.levels or rule.targets.resources or rule.targets.agents)


def subject_miss(rule: PolicyRule, sub: str | None, roles: frozenset[str]) -> Miss | None:
    subjects = rule.subjects
    if roles.intersection(subjects.roles) or (sub is not None and sub in subjects.subs):
        return None
    wanted = [f"role {', '.join(subjects.roles)}"] if subjects.roles else []
    if subjects.subs:
        wanted.append(f"sub {', '.join(subjects.subs)}")
    return Miss("subject", f"wants {' or '.join(wanted) or 'nobody (no roles, no subs)'}")


def target_miss(rule: PolicyRule, request: Request) -> Miss | None:
    targets = rule.targets
    if request.is_delegation:
        if not (targets.agents or targets.levels):
            if targets.tools or targets.resources:
                return Miss("target", "names only tools or resources, not agents")
            return None
        if targets.agents and not any(glob_matches(p, request.target) for p in targets.agents):
            return Miss("target", f"agents {', '.join(targets.agents)} do not include {request.target}")
        if targets.levels and request.level not in targets.levels:
            levels = ", ".join(map(str, targets.levels))
            return Miss("target", f"levels {levels} do not include asking {request.target} (level {request.level})")
        return None
    if request.is_tool:
        if not has_tool_targets(rule):
            if targets.resources or targets.agents:
                return Miss("target", "names only resources or agents, not tools")
            return None
        if targets.tools and not any(tool_matches(p, request.target) for p in targets.tools):
            return Miss("target", f"tools {', '.join(targets.tools)} do not include {request.target}")
        if targets.levels and request.level not in targets.levels:
            levels = ", ".join(map(str, targets.levels))
            return Miss("target", f"levels {levels} do not include {request.target}'s level {request.level}")
        return None
    if not targets.resources:
        if has_tool_targets(rule) or targets.agents:
            return Miss("target", "names only tools, agents or levels, not resources")
        return None
    if not any(resource_matches(p, request.target) for p in targets.resources):
        return Miss("target", f"resources {', '.join(targets.resources)} do not match {request.target}")
    return None


OPERATORS = ("one_of", "prefix", "path_prefix", "matches", "max")


def condition_operator(condition: Condition) -> tuple[str, Any]:
    """The one operator a condition carries (the schema allows exactly one) and its operand."""
    for op in OPERATORS:
        value = getattr(condition, op)
        if value is not None:
            return op, value
    return "equals", condition.equals


def _same(a: Any, b: Any) -> bool:
    # Python says True == 1 and 1 == 1.0; YAML users mean a boolean is not a number.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_UNPLACEABLE = re.compile(r"[\\\x00-\x1f\x7f]")


def normal_path(text: str) -> tuple[bool, tuple[str, ...]] | None:
    """``(absolute, segments)`` of a path with ``.``, ``..`` and repeated ``/`` collapsed.

    ``None`` when the path cannot be placed: it climbs above its start, or holds a
    backslash or a control character (a separator on some systems, a name on ours).
    """
    if _UNPLACEABLE.search(text):
        return None
    parts: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(segment)
    return text.startswith("/"), tuple(parts)


def is_normal_path(text: str) -> bool:
    """Whether ``text`` is spelled the one way it normalises to (no ``.``/``..``/empty segments)."""
    if _UNPLACEABLE.search(text):
        return False
    inner = text[1:] if text.startswith("/") else text
    inner = inner[:-1] if inner.endswith("/") else inner
    return inner == "" or all(segment not in ("", ".", "..") for segment in inner.split("/"))


def path_under(value: str, operand: str) -> bool | None:
    """Whether path ``value`` lies at or under path ``operand``; ``None`` when it cannot be told."""
    placed, base = normal_path(value), normal_path(operand)
    if placed is None or base is None or placed[0] != base[0]:
        return None
    return placed[1][: len(base[1])] == base[1]


def _holds(op: str, operand: Any, value: Any, deny: bool) -> bool | None:
    """True/False when the condition can be decided on ``value``; None when it cannot."""
    if op == "equals":
        return _same(value, operand)
    if op == "one_of":
        return any(_same(value, option) for option in operand)
    if op == "max":
        return value <= operand if _is_number(value) else None
    if not isinstance(value, str):
        return None
    if deny and op in ("prefix", "matches") and not is_normal_path(value):
        return None  # another spelling of a path (./secret, x/../secret) could hide what the deny names
    if op == "prefix":
        # A ".." segment could climb out of the prefix (documents/../secrets), so it never counts as under it.
        return value.startswith(operand) and ".." not in re.split(r"[/\\]", value)
    if op == "path_prefix":
        return path_under(value, operand)
    return compile_linear(operand).fullmatch(value) is not None  # matches: RE2, linear in the value


def condition_holds(condition: Condition, arguments: Mapping[str, Any] | None, *, deny: bool = False) -> str | None:
    """``None`` when the condition holds, else why not.

    For a deny rule (``deny=True``) a condition that cannot be decided holds
    (fail closed); for any other rule it does not.
    """
    op, operand = condition_operator(condition)
    name = condition.argument
    if arguments is None or name not in arguments:
        if deny:
            return None
        return f"argument {name!r} is missing"
    value = arguments[name]
    verdict = _holds(op, operand, value, deny)
    if verdict or (verdict is None and deny):
        return None
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    if verdict is None:
        return f"{name} = {shown} cannot be compared by {op} {operand!r}"
    return f"{name} = {shown} fails {op} {operand!r}"


def undecided_conditions(rule: PolicyRule, arguments: Mapping[str, Any]) -> list[str]:
    """Why each of a deny's conditions held only because it could not be decided (for its reason)."""
    found = []
    for condition in rule.conditions:
        if condition_holds(condition, arguments, deny=False) is None:
            continue  # it holds on its own
        op, operand = condition_operator(condition)
        if condition.argument not in arguments:
            found.append(f"argument {condition.argument!r} is missing")
            continue
        value = arguments[condition.argument]
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        if _holds(op, operand, value, True) is None:
            found.append(f"{condition.argument} = {shown} cannot be decided by {op} {operand!r}")
    return found


def rule_miss(rule: PolicyRule, request: Request) -> Miss | None:
    """``None`` when ``rule`` matches ``request``, else the first aspect that does not."""
    miss = subject_miss(rule, request.sub, request.roles)
    if miss is not None:
        return miss
    if request.action not in rule.actions:
        return Miss("action", f"actions {', '.join(rule.actions)} do not include {request.action}")
    miss = target_miss(rule, request)
    if miss is not None:
        return miss
    if request.arguments is None and rule.conditions:
        # Arguments not known yet (listing tools, a matrix): a permitting rule could match for
        # some arguments, so it counts; a conditional deny is not assumed.  A call always
        # carries its arguments, so a real run is never decided this way.
        if rule.effect == "deny":
            return Miss("condition", "arguments not given: a conditional deny is not assumed to apply")
        return None
    for condition in rule.conditions:
        why = condition_holds(condition, request.arguments, deny=rule.effect == "deny")
        if why is not None:
            return Miss("condition", why)
    return None
