"""``policy test``: a file of requests and the decisions they must get, like ``opa test``.

The file (``policies/tests/*.yaml``; JSON Schema ``cases.json`` next to this
module) has a ``name``, a ``description`` and ``cases``; each case names the
requester (``roles``, ``sub``), one ``tool`` (a call, with ``arguments``),
one ``resource`` (a read) or one ``agent`` (a delegation asking it), and the expected ``effect`` — plus, when given, the
``approver``, exactly the matching ``rules``, the ``deciding_rule`` and
``self_approval``.  Problems with the file itself (YAML, schema, a tool the
configuration does not declare, a rule id no policy has) are reported with
``file:line`` like the config loader's, as a :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import jsonschema

from ..config.model import Config
from ..config.schemas import _problems as _schema_problems
from ..config.yamldoc import Document, read_document
from ..errors import ConfigError, ConfigProblem
from ._decision import Decision
from ._engine import decide, policy_rules

_CHECKED = ("effect", "approver", "rules", "deciding_rule", "self_approval")


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files(__package__).joinpath("cases.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@attrs.frozen
class Case:
    name: str
    line: int
    roles: frozenset[str]
    sub: str | None
    action: str
    target: str
    arguments: Mapping[str, Any]
    expected: Mapping[str, Any]  # only the keys the case checks


@attrs.frozen
class CaseResult:
    case: Case
    decision: Decision
    mismatches: tuple[str, ...]  # "effect: expected allow, got deny"

    @property
    def passed(self) -> bool:
        return not self.mismatches


@attrs.frozen
class CasesReport:
    file: str
    results: tuple[CaseResult, ...]
    uncovered: tuple[tuple[str, str], ...]  # (rule id, file:line) no case matched

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(result for result in self.results if not result.passed)


def load_cases(path: Path, config: Config, display: str | None = None) -> tuple[str, list[Case]]:
    """The cases of ``path``, checked against the schema and ``config``; raise ConfigError otherwise."""
    display = display or str(path)
    doc = read_document(path, display)
    if isinstance(doc, list):
        raise ConfigError(doc)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem([], f"expected a mapping of keys to values, found {type(doc.data).__name__}")])
    problems = [p for error in _validator().iter_errors(doc.data) for p in _case_problems(doc, error)]
    if problems:
        raise ConfigError(problems)
    rule_ids = {rule.id for rule in policy_rules(config)}
    cases = []
    for index, raw in enumerate(doc.data["cases"]):
        problems += _reference_problems(doc, index, raw, config, rule_ids)
        tool = raw.get("tool")
        action, target = ("tool.call", tool) if tool is not None else (
            ("agent.delegate", raw["agent"]) if "agent" in raw else ("resource.read", raw["resource"]))
        cases.append(Case(
            name=raw["name"],
            line=doc.locate(["cases", index])[0],
            roles=frozenset(raw.get("roles", ())),
            sub=raw.get("sub"),
            action=action,
            target=target,
            arguments=raw.get("arguments", {}),
            expected={key: raw[key] for key in _CHECKED if key in raw},
        ))
    if problems:
        raise ConfigError(problems)
    return display, cases


def _case_problems(doc: Document, error: jsonschema.ValidationError) -> list[ConfigProblem]:
    if error.validator == "oneOf" and list(error.absolute_path)[:1] == ["cases"]:
        # jsonschema's own words here are a dump of the whole case; say what is meant.
        return [doc.problem(list(error.absolute_path), "a case names exactly one of 'tool', 'resource' and 'agent'")]
    return list(_schema_problems(doc, error))


def _reference_problems(
    doc: Document, index: int, raw: Mapping[str, Any], config: Config, rule_ids: set[str]
) -> list[ConfigProblem]:
    where: list[str | int] = ["cases", index]
    problems = []
    if "tool" in raw and raw["tool"] not in config.tools:
        problems.append(doc.problem([*where, "tool"], f"unknown tool {raw['tool']!r}"))
    if "agent" in raw and raw["agent"] not in config.agents:
        problems.append(doc.problem([*where, "agent"], f"unknown agent {raw['agent']!r}"))
    if "resource" in raw:
        host = "/".join(raw["resource"].split("/")[:3])
        if host not in config.resources and host != "board://session":
            problems.append(doc.problem([*where, "resource"], f"unknown resource host {host!r}"))
    for r_index, rule_id in enumerate(raw.get("rules", ())):
        if rule_id not in rule_ids:
            problems.append(doc.problem([*where, "rules", r_index], f"no policy rule has id {rule_id!r}"))
    deciding = raw.get("deciding_rule")
    if deciding is not None and deciding not in rule_ids:
        problems.append(doc.problem([*where, "deciding_rule"], f"no policy rule has id {deciding!r}"))
    return problems


def _actual(decision: Decision, key: str) -> Any:
    if key == "rules":
        return sorted(decision.rule_ids)
    if key == "deciding_rule":
        return None if decision.deciding_rule is None else decision.deciding_rule.id
    return getattr(decision, key)


def run_case(config: Config, case: Case) -> CaseResult:
    decision = decide(config, case.sub, case.roles, case.action, case.target, case.arguments)
    mismatches = []
    for key, want in case.expected.items():
        got = _actual(decision, key)
        if key == "rules":
            want = sorted(want)
        if got != want:
            mismatches.append(f"{key}: expected {_show(want)}, got {_show(got)}")
    return CaseResult(case, decision, tuple(mismatches))


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def run_cases(config: Config, path: Path, display: str | None = None) -> CasesReport:
    """Run every case of ``path``; coverage is the rules no case's request matched."""
    file, cases = load_cases(path, config, display)
    results = tuple(run_case(config, case) for case in cases)
    exercised = {rule_id for result in results for rule_id in result.decision.rule_ids}
    uncovered = tuple((rule.id, str(rule.source)) for rule in policy_rules(config) if rule.id not in exercised)
    return CasesReport(file, results, uncovered)
