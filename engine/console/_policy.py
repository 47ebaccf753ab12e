"""The console's read-only policy questions: explain one request, the matrix, who can.

Pure functions over the hub's current configuration (engine.policy), shaped as JSON for
the Policies page; the same answers as ``sconnect policy explain | matrix | who-can``.
A request the configuration does not know (a tool not declared, a URI the server would
refuse) is a :class:`ValueError` with the reason, shown to the user as a 400.
"""

from __future__ import annotations

import json
from typing import Any

from ..config import Config
from ..policy import Decision, explain, matrix, remember_bound, subjects, who_can
from ..resources import ResourceError, parse_uri


def target_of(config: Config, target: str) -> tuple[str, str]:
    """(action, target): a declared tool, or a resource URI on a declared host."""
    if "://" not in target:
        if target not in config.tools:
            raise ValueError(f"unknown tool {target!r} (known: {', '.join(sorted(config.tools)) or 'none'})")
        return "tool.call", target
    try:
        parsed = parse_uri(target)
    except ResourceError as exc:
        raise ValueError(f"{target!r}: {exc.message}") from None
    if parsed.key not in config.resources:
        raise ValueError(f"unknown resource host {parsed.key!r} (known: {', '.join(sorted(config.resources))})")
    return "resource.read", str(parsed)


def explain_json(config: Config, sub: str | None, roles: frozenset[str], target: str,
                 arguments_text: str | None) -> dict[str, Any]:
    action, target = target_of(config, target)
    arguments = None
    if arguments_text:
        try:
            arguments = json.loads(arguments_text)
        except ValueError as exc:
            raise ValueError(f"arguments: not JSON ({exc})") from None
        if not isinstance(arguments, dict):
            raise ValueError("arguments: a JSON object, e.g. {\"path\": \"notes.txt\"}")
    evaluation = explain(config, sub, roles, action, target, arguments)
    if isinstance(evaluation, Decision):
        raise ValueError(evaluation.reason)
    decision, request = evaluation.decision, evaluation.request
    # How long an approval under this decision may be remembered (a grant), as `policy explain` says.
    bound = remember_bound(config, decision, request.level if request.is_tool else 0)
    return {
        "request": {"sub": sub, "roles": sorted(roles), "action": action, "target": target, "arguments": arguments},
        "decision": decision.to_json(),
        "remember": {"allowed": bound.allowed, "max_s": bound.max_s, "reason": bound.reason,
                     "text": bound.describe()},
        "considered": [
            {"id": c.rule.id, "effect": c.rule.effect, "source": str(c.rule.source), "matched": c.matched,
             "why_not": None if c.miss is None else str(c.miss)}
            for c in evaluation.considered
        ],
    }


def matrix_json(config: Config) -> dict[str, Any]:
    rows = matrix(config)
    return {
        "subjects": subjects(config),
        "rows": [{"target": target, "cells": {s: c.to_json() for s, c in cells.items()}}
                 for target, cells in rows.items()],
    }


def who_can_json(config: Config, target: str) -> dict[str, Any]:
    if "://" in target:
        action, target = target_of(config, target)
        host = parse_uri(target).key
        target = f"{host}/**"
    else:
        target_of(config, target)
    return {"target": target, "subjects": [{"subject": s, **c.to_json()} for s, c in who_can(config, target)]}
