"""Whether one rule matches one request, and if not, the first reason why not.

Pure functions over the config model.  The order of the checks is the order
``policy explain`` reports them in: subject, action, target, condition.

Targets by kind: a ``tool.call`` is matched by ``targets.tools`` and
``targets.levels`` (each given list must match), a ``resource.read`` by
``targets.resources``.  A rule with no targets at all matches every target of
its actions; a rule whose targets name only the other kind matches none of
this kind (``targets: {resources: [...]}`` never matches a tool call).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..config.model import Condition, PolicyRule
from ..globs import glob_regex
from ..linear_re import compile_linear

GLOB_CHARS = frozenset("*?[")


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

    def describe(self) -> str:
        """``alice (roles user) to call shell (level 2)``, for reasons."""
        roles = f"roles {', '.join(sorted(self.roles))}" if self.roles else "no roles"
        who = f"{self.sub} ({roles})" if self.sub else roles
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


def resource_regex(pattern: str) -> re.Pattern[str]:
    """A resource URI glob as a regex: ``**`` crosses ``/``, ``*`` and ``?`` stay within one segment."""
    return glob_regex(pattern)


def resource_matches(pattern: str, uri: str) -> bool:
    return resource_regex(pattern).fullmatch(uri) is not None


def tool_matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def names_tool(rule: PolicyRule, tool: str) -> bool:
    """Whether ``rule`` names ``tool`` exactly (not by a glob, not by a level): what unlocks level 3."""
    return tool in rule.targets.tools


def has_tool_targets(rule: PolicyRule) -> bool:
    return bool(rule.targets.tools or rule.targets.levels)


def has_any_targets(rule: PolicyRule) -> bool:
    return bool(rule.targets.tools or rule.targets.levels or rule.targets.resources)


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
    if request.is_tool:
        if not has_tool_targets(rule):
            if targets.resources:
                return Miss("target", "names only resources, not tools")
            return None
        if targets.tools and not any(tool_matches(p, request.target) for p in targets.tools):
            return Miss("target", f"tools {', '.join(targets.tools)} do not include {request.target}")
        if targets.levels and request.level not in targets.levels:
            levels = ", ".join(map(str, targets.levels))
            return Miss("target", f"levels {levels} do not include {request.target}'s level {request.level}")
        return None
    if not targets.resources:
        if has_tool_targets(rule):
            return Miss("target", "names only tools or levels, not resources")
        return None
    if not any(resource_matches(p, request.target) for p in targets.resources):
        return Miss("target", f"resources {', '.join(targets.resources)} do not match {request.target}")
    return None


def condition_operator(condition: Condition) -> tuple[str, Any]:
    """The one operator a condition carries (the schema allows exactly one) and its operand."""
    for op in ("one_of", "prefix", "matches", "max"):
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


def condition_holds(condition: Condition, arguments: Mapping[str, Any] | None) -> str | None:
    """``None`` when the condition holds, else why not (a missing argument never holds)."""
    op, operand = condition_operator(condition)
    name = condition.argument
    if arguments is None or name not in arguments:
        return f"argument {name!r} is missing"
    value = arguments[name]
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    if op == "equals":
        ok = _same(value, operand)
    elif op == "one_of":
        ok = any(_same(value, option) for option in operand)
    elif op == "prefix":
        # A ".." segment could climb out of the prefix (documents/../secrets), so it never counts as under it.
        ok = isinstance(value, str) and value.startswith(operand) and ".." not in re.split(r"[/\\]", value)
    elif op == "matches":
        # RE2: the value comes from a client; a backtracking match could hold the event loop.
        ok = isinstance(value, str) and compile_linear(operand).fullmatch(value) is not None
    else:  # max
        ok = _is_number(value) and value <= operand
    if ok:
        return None
    return f"{name} = {shown} fails {op} {operand!r}"


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
        why = condition_holds(condition, request.arguments)
        if why is not None:
            return Miss("condition", why)
    return None
