"""Questions over the whole policy: who can call a tool, the roles × targets matrix, a diff.

Columns are the declared roles plus every ``sub`` a rule names (as
``sub:NAME``, holding no role); rows are the declared tools and resource hosts.
A tool cell is decided with the arguments unknown (a conditional grant counts,
marked ``conditional``); a resource host cell is decided for a generic path
under the host and for one concrete path under each rule glob that reaches the
host, showing the most permissive answer and ``conditional`` when paths differ.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ..config.model import Config
from ..globs import glob_matches
from ._decision import Decision
from ._engine import decide, policy_rules
from ._match import resource_matches

# Most permissive first: a host cell shows the best any path gets.
_PERMISSIVENESS = {"allow": 0, "user": 1, "admin": 2, "deny": 3}


@attrs.frozen
class Cell:
    """One subject's answer for one tool or resource host."""

    label: str  # allow | user | admin | deny
    conditional: bool  # depends on the arguments (tools) or the path (resource hosts)
    decision: Decision

    @property
    def text(self) -> str:
        return self.label + ("*" if self.conditional else "")

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "conditional": self.conditional, "reason": self.decision.reason,
                "rules": list(self.decision.rule_ids)}


def named_subs(config: Config) -> list[str]:
    """Every ``sub`` value a rule names, sorted."""
    return sorted({sub for rule in policy_rules(config) for sub in rule.subjects.subs})


def subjects(config: Config) -> list[str]:
    """Matrix columns: the declared roles, then ``sub:NAME`` for every named sub."""
    return sorted(config.roles) + [f"sub:{sub}" for sub in named_subs(config)]


def _who(subject: str) -> tuple[str | None, frozenset[str]]:
    if subject.startswith("sub:"):
        return subject[4:], frozenset()
    return None, frozenset({subject})


def hosts(config: Config) -> list[str]:
    return sorted(config.resources)


def targets(config: Config) -> list[str]:
    """Matrix rows: tools by name, then resource hosts as ``scheme://name/**``."""
    return sorted(config.tools) + [f"{host}/**" for host in hosts(config)]


def _concrete(glob: str) -> str:
    # One URI the glob matches: every wildcard replaced by a plain segment.
    return glob.replace("**", "x/y").replace("*", "x").replace("?", "x")


def resource_probes(config: Config, host: str) -> list[str]:
    """URIs that stand for reading under ``host``: a generic path, and one per rule glob reaching it.

    A glob with no path (``test://static-*``) stands for the host's own URI, which a static host serves.
    """
    probes = [f"{host}/.any/path"]
    for rule in policy_rules(config):
        for pattern in rule.targets.resources:
            scheme_host, _, rest = pattern.partition("://")
            name, _, path = rest.partition("/")
            if not glob_matches(f"{scheme_host}://{name}", host):
                continue
            probe = f"{host}/{_concrete(path)}" if path else host
            if resource_matches(pattern, probe) and probe not in probes:
                probes.append(probe)
    return probes


def cell(config: Config, subject: str, target: str) -> Cell:
    """The answer for ``subject`` (role or ``sub:NAME``) on ``target`` (tool, or ``host/**``)."""
    sub, roles = _who(subject)
    if target.endswith("/**") and target[:-3] in config.resources:
        decisions = [decide(config, sub, roles, "resource.read", uri) for uri in resource_probes(config, target[:-3])]
        best = min(decisions, key=lambda d: _PERMISSIVENESS[d.label])
        return Cell(best.label, len({d.label for d in decisions}) > 1, best)
    decision = decide(config, sub, roles, "tool.call", target)
    return Cell(decision.label, decision.conditional, decision)


def matrix(config: Config) -> dict[str, dict[str, Cell]]:
    """``{target: {subject: cell}}`` for every tool and resource host and every subject."""
    columns = subjects(config)
    return {target: {subject: cell(config, subject, target) for subject in columns} for target in targets(config)}


def who_can(config: Config, target: str) -> list[tuple[str, Cell]]:
    """The subjects (roles, then named subs) whose answer on ``target`` is not deny."""
    found = [(subject, cell(config, subject, target)) for subject in subjects(config)]
    return [(subject, c) for subject, c in found if c.label != "deny"]


@attrs.frozen
class Change:
    """A subject whose answer on a target differs between two policy sets."""

    subject: str
    target: str
    old: Cell | None  # None: the target does not exist on that side
    new: Cell | None

    @staticmethod
    def _text(c: Cell | None) -> str:
        return "absent" if c is None else c.text

    def __str__(self) -> str:
        return f"{self.target:<28} {self.subject:<14} {self._text(self.old)} -> {self._text(self.new)}"

    def to_json(self) -> dict[str, object]:
        return {"subject": self.subject, "target": self.target,
                "old": None if self.old is None else self.old.to_json(),
                "new": None if self.new is None else self.new.to_json()}


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    return sorted(set(a) | set(b), key=lambda t: (t.endswith("/**"), t))


def diff(old: Config, new: Config) -> list[Change]:
    """Every (subject, target) whose cell differs between ``old`` and ``new`` (label or conditional)."""
    columns = sorted(set(subjects(old)) | set(subjects(new)), key=lambda s: (s.startswith("sub:"), s))
    changes = []
    old_targets, new_targets = set(targets(old)), set(targets(new))
    for target in _union(old_targets, new_targets):
        for subject in columns:
            before = cell(old, subject, target) if target in old_targets else None
            after = cell(new, subject, target) if target in new_targets else None
            same = (before is not None and after is not None
                    and (before.label, before.conditional) == (after.label, after.conditional))
            if not same:
                changes.append(Change(subject, target, before, after))
    return changes
