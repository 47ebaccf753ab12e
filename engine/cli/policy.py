"""``sconnect policy ...``: the operators' and auditors' view of the policies.

``explain`` shows one decision and every rule behind it; ``who-can`` and
``can-i`` answer by exit code like ``kubectl auth can-i``; ``matrix`` draws
roles × tools and resource hosts; ``lint`` finds rules that never match, are
shadowed or overridden, and risky grants; ``test`` runs expected decisions
like ``opa test``; ``diff`` lists every answer that changes between two
configuration directories.

Exit codes: 0 ok (allowed, no failures, no lint errors, no changes or a diff
printed), 1 the answer is "no" (denied, failing cases, lint errors), 2 the
command was wrong (unknown tool, bad JSON, a cases file that does not load).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import load_config, resolve_config_dir
from ..config.model import Config
from ..errors import ConfigError, UsageError
from .output import print_json


def register(commands: Any) -> None:
    from .args import add_config_option

    parser = commands.add_parser("policy", help="explain, test, lint and compare the policies")
    sub = parser.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    def target_options(p: argparse.ArgumentParser, *, args: bool = True) -> None:
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--tool", metavar="NAME", help="a tool call of this declared tool")
        which.add_argument("--resource", metavar="URI", help="a read of this resource URI")
        which.add_argument("--agent", metavar="NAME", help="a delegation (agent.delegate) asking this declared agent")
        if args:
            p.add_argument("--args", metavar="JSON",
                           help="the call's arguments as a JSON object (default: not given — "
                                "granting rules' conditions are assumed to hold, denying rules' are not)")

    def subject_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--role", action="append", default=[], metavar="ROLE",
                       help="a role the requester holds (repeatable)")
        p.add_argument("--sub", metavar="SUB", help="the requester's subject (the token's sub)")

    explain = sub.add_parser("explain", help="one decision and every rule considered, with file:line")
    subject_options(explain)
    target_options(explain)
    add_config_option(explain)
    explain.add_argument("--json", action="store_true", help="print the decision and the rules as JSON")
    explain.set_defaults(run=run_explain)

    who = sub.add_parser("who-can", help="the roles (and named subs) allowed to call a tool or read a resource")
    target_options(who, args=False)
    add_config_option(who)
    who.add_argument("--json", action="store_true", help="print the answer as JSON")
    who.set_defaults(run=run_who_can)

    can = sub.add_parser("can-i", help="exit 0 when allowed (printing which approval), 1 when denied")
    subject_options(can)
    target_options(can)
    add_config_option(can)
    can.add_argument("--json", action="store_true", help="print the decision as JSON")
    can.set_defaults(run=run_can_i)

    grid = sub.add_parser("matrix", help="roles × tools and resource hosts: allow / user / admin / deny")
    add_config_option(grid)
    grid.add_argument("--json", action="store_true", help="print the matrix as JSON")
    grid.set_defaults(run=run_matrix)

    lint = sub.add_parser("lint", help="rules that never match, shadowed or overridden rules, risky grants")
    add_config_option(lint)
    lint.add_argument("--json", action="store_true", help="print the findings as JSON")
    lint.set_defaults(run=run_lint)

    test = sub.add_parser("test", help="check expected decisions from a cases file (exit 1 on any failure)")
    test.add_argument("cases", metavar="CASES.yaml", help="the cases file (e.g. policies/tests/default.yaml)")
    add_config_option(test)
    test.add_argument("--json", action="store_true", help="print the results as JSON")
    test.set_defaults(run=run_test)

    diff = sub.add_parser("diff", help="every answer that changes between two configuration directories")
    diff.add_argument("old", metavar="OLD_DIR", help="configuration directory holding policies/ (before)")
    diff.add_argument("new", metavar="NEW_DIR", help="configuration directory holding policies/ (after)")
    diff.add_argument("--json", action="store_true", help="print the changes as JSON")
    diff.set_defaults(run=run_diff)


# --- shared ---------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return load_config(resolve_config_dir(args.config))


def _arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.args is None:
        return None
    try:
        value = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--args must be a JSON object")
    return value


def _target(config: Config, args: argparse.Namespace) -> tuple[str, str]:
    """(action, target), refusing a tool or resource host the configuration does not declare."""
    if args.tool is not None:
        if args.tool not in config.tools:
            known = ", ".join(sorted(config.tools)) or "none"
            raise UsageError(f"unknown tool {args.tool!r} (known: {known})")
        return "tool.call", args.tool
    if getattr(args, "agent", None) is not None:
        if args.agent not in config.agents:
            from ..suggest import unknown_name

            raise UsageError(unknown_name("agent", args.agent, config.agents))
        return "agent.delegate", args.agent
    if args.resource == "board://session":  # the session board (engine/server/board.py), not a resources.d/ host
        return "resource.read", args.resource
    from ..resources import ResourceError, parse_uri

    try:
        # The server's own strict parser: what it would refuse is not a question for the policy.
        parsed = parse_uri(args.resource)
    except ResourceError as exc:
        raise UsageError(f"{args.resource!r}: {exc.message} (the server refuses this URI before any policy)") from None
    if parsed.key not in config.resources:
        known = ", ".join(sorted(config.resources)) or "none"
        raise UsageError(f"unknown resource host {parsed.key!r} in {args.resource!r} (known: {known})")
    return "resource.read", str(parsed)


def _approval_text(decision: Any) -> str:
    if decision.effect == "allow":
        return "without approval"
    if decision.effect == "require_approval":
        return f"with {'the user' if decision.approver == 'user' else 'an admin'}'s approval" + (
            " (self-approval allowed)" if decision.self_approval else "")
    return "denied"


# --- explain / can-i / who-can ----------------------------------------------------


def _warn_undeclared_roles(config: Any, roles: list[str]) -> None:
    """A role no policy declares grants nothing: say so (it is usually a typo), on stderr."""
    from ..suggest import unknown_name

    for role in roles:
        if role not in config.roles:
            print(f"note: {unknown_name('role', role, config.roles)}: it grants nothing", file=sys.stderr)


def run_explain(args: argparse.Namespace) -> int:
    from ..policy import Decision, explain, remember_bound

    config = _config(args)
    _warn_undeclared_roles(config, args.role)
    action, target = _target(config, args)
    evaluation = explain(config, args.sub, frozenset(args.role), action, target, _arguments(args))
    if isinstance(evaluation, Decision):  # only for an unknown tool or action, which _target refused
        raise UsageError(evaluation.reason)
    decision, considered, request = evaluation.decision, evaluation.considered, evaluation.request
    steps = _chain_steps(config, args, action, target)
    bound = remember_bound(config, decision, request.level if request.is_tool else 0)
    if args.json:
        print_json({
            "request": {"sub": request.sub, "roles": sorted(request.roles), "action": action, "target": target,
                        "level": request.level if request.has_level else None, "arguments": request.arguments},
            "decision": decision.to_json(),
            "remember": {"allowed": bound.allowed, "max_s": bound.max_s, "reason": bound.reason},
            "considered": [
                {"id": c.rule.id, "effect": c.rule.effect, "source": str(c.rule.source), "matched": c.matched,
                 "aspect": None if c.miss is None else c.miss.aspect, "why_not": None if c.miss is None else c.miss.why}
                for c in considered
            ],
            **({"steps": [{"step": i, "id": step.id, "tool": step.tool, "arguments": given,
                           "decision": d.to_json()} for i, step, given, d in steps]} if steps else {}),
        })
        return 0
    print(f"request:  {request.describe()}")
    given = json.dumps(request.arguments) if request.arguments is not None else (
        "not given (granting rules' conditions assumed to hold, denying rules' not)")
    print(f"arguments: {given}")
    approver = f" (approver: {decision.approver})" if decision.requires_approval else ""
    print(f"decision: {decision.effect}{approver}")
    print(f"reason:   {decision.reason}")
    print(f"deciding: {decision.deciding_rule or '-'}")
    if decision.requires_approval:
        print(f"remember: {bound.describe()}")
    print(f"revision: {decision.policy_revision}")
    print("rules considered, in policy order:")
    width = max((len(c.rule.id) for c in considered), default=0)
    for c in considered:
        verdict = "MATCH" if c.matched else "no   "
        why = "" if c.miss is None else f"  {c.miss}"
        print(f"  {verdict} {c.rule.id:<{width}}  {c.rule.effect:<16} {c.rule.source}{why}")
    if not considered:
        print("  (no rules)")
    if steps:
        print("chain steps, each decided again when it runs (arguments from earlier steps not known here):")
        for index, step, _given, d in steps:
            approver = f" (approver: {d.approver})" if d.requires_approval else ""
            print(f"  {step.label(index)}: {d.effect}{approver}: {d.reason}")
    return 0


def _chain_steps(config: Config, args: argparse.Namespace, action: str, target: str) -> list[tuple[Any, ...]]:
    """For a chain tool: (index, step, arguments or None, decision) of each step, for the same subject."""
    tool = config.tools.get(target) if action == "tool.call" else None
    if tool is None or not tool.chain:
        return []
    from ..models import template
    from ..policy import decide

    given = _arguments(args)
    found = []
    for index, step in enumerate(tool.chain):
        try:
            # Only what the chain's own arguments fill; a step reading an earlier result is judged without.
            arguments = template.fill(dict(step.arguments), {"args": given, "steps": {}}) if given is not None else None
        except template.Missing:
            arguments = None
        decision = decide(config, args.sub, frozenset(args.role), action, step.tool, arguments)
        found.append((index, step, arguments, decision))
    return found


def run_can_i(args: argparse.Namespace) -> int:
    from ..policy import decide

    config = _config(args)
    _warn_undeclared_roles(config, args.role)
    action, target = _target(config, args)
    decision = decide(config, args.sub, frozenset(args.role), action, target, _arguments(args))
    if args.json:
        print_json({"allowed": decision.allowed, **decision.to_json()})
    elif decision.allowed:
        print(f"yes, {_approval_text(decision)}")
    else:
        print(f"no: {decision.reason}")
    return 0 if decision.allowed else 1


def run_who_can(args: argparse.Namespace) -> int:
    from ..policy import cell, decide, subjects

    config = _config(args)
    action, target = _target(config, args)
    found = []
    for subject in subjects(config):
        if action == "tool.call":
            c = cell(config, subject, target)
            label, conditional, decision = c.label, c.conditional, c.decision
        else:
            sub, roles = (subject[4:], frozenset()) if subject.startswith("sub:") else (None, frozenset({subject}))
            decision = decide(config, sub, roles, action, target)
            label, conditional = decision.label, False
        if decision.allowed:
            found.append((subject, label, conditional, decision))
    if args.json:
        print_json({"target": target, "action": action, "allowed": [
            {"subject": s, "label": label, "approver": d.approver, "conditional": cond, "reason": d.reason,
             "rules": list(d.rule_ids)} for s, label, cond, d in found]})
        return 0
    if not found:
        verb = {"tool.call": "call", "agent.delegate": "have an agent ask"}.get(action, "read")
        print(f"nobody may {verb} {target}")
        return 0
    for subject, _label, conditional, decision in found:
        what = "role " + subject if not subject.startswith("sub:") else subject.replace(":", " ", 1)
        cond = " (for some arguments)" if conditional else ""
        print(f"{what}: {_approval_text(decision)}{cond}  [{decision.deciding_rule or '-'}]")
    return 0


# --- matrix ---------------------------------------------------------------------


def run_matrix(args: argparse.Namespace) -> int:
    from ..policy import matrix, subjects

    config = _config(args)
    grid = matrix(config)
    columns = subjects(config)
    if args.json:
        print_json({"subjects": columns, "rows": {
            target: {"level": config.tools[target].permission_level if target in config.tools else None,
                     "cells": {s: c.to_json() for s, c in row.items()}}
            for target, row in grid.items()}})
        return 0
    first = max([len("tool / resource"), *(len(t) + 4 for t in grid)])
    widths = [max(len(s), 6) for s in columns]
    header = "  ".join(f"{s:<{w}}" for s, w in zip(columns, widths, strict=True))
    print(f"{'tool / resource':<{first}}  {header}".rstrip())
    for target, row in grid.items():
        label = f"{target} L{config.tools[target].permission_level}" if target in config.tools else target
        cells = "  ".join(f"{row[s].text:<{w}}" for s, w in zip(columns, widths, strict=True))
        print(f"{label:<{first}}  {cells}".rstrip())
    print("allow: no approval; user/admin: who approves; deny: refused; "
          "*: depends on the arguments (tools) or the path (resources)")
    return 0


# --- lint -----------------------------------------------------------------------


def run_lint(args: argparse.Namespace) -> int:
    from ..policy import Finding, lint

    root = resolve_config_dir(args.config)
    try:
        findings = lint(load_config(root))
    except ConfigError as exc:
        # Unknown roles and tools are refused by the loader: they are lint errors too.
        findings = [Finding(f"{p.file}:{p.line}", "error", "config", p.message if not p.field
                            else f"{p.field}: {p.message}") for p in exc.problems]
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    if args.json:
        print_json({"ok": not errors, "errors": [f.to_json() for f in errors],
                    "warnings": [f.to_json() for f in warnings]})
    else:
        for finding in findings:
            print(finding)
        print(f"{len(errors)} error{'s' if len(errors) != 1 else ''}, "
              f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
    return 1 if errors else 0


# --- test -----------------------------------------------------------------------


def run_test(args: argparse.Namespace) -> int:
    from ..policy import run_cases

    config = _config(args)
    path = Path(args.cases)
    if not path.is_file():
        raise UsageError(f"{path}: no such cases file")
    report = run_cases(config, path, str(path))
    failures = report.failures
    if args.json:
        print_json({
            "file": report.file, "passed": len(report.results) - len(failures), "failed": len(failures),
            "failures": [{"name": r.case.name, "line": r.case.line, "mismatches": list(r.mismatches),
                          "decision": r.decision.to_json()} for r in failures],
            "uncovered_rules": [{"id": i, "source": s} for i, s in report.uncovered],
        })
        return 1 if failures else 0
    for result in failures:
        case = result.case
        print(f"FAIL {report.file}:{case.line}: {case.name}")
        for mismatch in result.mismatches:
            print(f"    {mismatch}")
        d = result.decision
        print(f"    actual: {d.effect} (approver {d.approver}), rules [{', '.join(d.rule_ids)}]: {d.reason}")
    total = len(report.results)
    print(f"{total - len(failures)}/{total} cases passed" + (f", {len(failures)} failed" if failures else ""))
    if report.uncovered:
        print("rules no case exercised:")
        for rule_id, source in report.uncovered:
            print(f"  {rule_id} ({source})")
    else:
        print("coverage: every rule exercised")
    return 1 if failures else 0


# --- diff -----------------------------------------------------------------------


def run_diff(args: argparse.Namespace) -> int:
    from ..policy import diff
    from ..policy._load import load_policy_set

    old_dir, new_dir = Path(args.old), Path(args.new)
    for directory in (old_dir, new_dir):
        if not directory.is_dir():
            raise UsageError(f"{directory}: no such directory")
    changes = diff(load_policy_set(old_dir, new_dir), load_policy_set(new_dir, old_dir))
    if args.json:
        print_json({"old": str(old_dir), "new": str(new_dir), "changes": [c.to_json() for c in changes]})
        return 0
    if not changes:
        print("no changes")
        return 0
    print(f"{'tool / resource':<28} {'subject':<14} old -> new")
    for change in changes:
        print(change)
    return 0
