"""``sconnect check``: load the whole configuration and summarise it, or list every error;
with a shared database, compare it with what the live instances serve.

With a PostgreSQL database configured (``--database-url``, else ``SCONNECT_DATABASE_URL``,
else ``database_url`` in ``<config>/sconnect.yaml``), ``check`` also lists the instances
serving on it now (their heartbeat is fresh: engine/server/pgbus.py) with the policy
revision each serves, when it loaded it, its version and host, and warns, one line each on
stderr, when their revisions differ from each other or from the configuration checked.

Exit codes: 0 the configuration is valid (and its trial call ran); 1 it is not (its errors
are listed), or the trial call failed; 2 the database cannot be reached (one line says
why; ``--no-instances`` skips the comparison); 3 with ``--strict``, the configuration is
valid but the live instances serve a revision other than it (or differ among
themselves). Without ``--strict`` a differing fleet is a warning, not a failure: during a
rolling change it is expected for a while.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import attrs

import sandbox

from ..config import LEVEL_NAMES, Config, load_config, resolve_config_dir
from ..errors import ConfigError, UsageError
from .output import print_json


def register(commands: Any) -> None:
    from .args import add_config_option

    parser = commands.add_parser("check", help="validate the configuration and summarise it")
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary or the errors as JSON")
    parser.add_argument("--database-url", metavar="URL",
                        help="the shared PostgreSQL database whose live instances to compare with this configuration "
                        "(default $SCONNECT_DATABASE_URL, else database_url in <config>/sconnect.yaml)")
    parser.add_argument("--no-instances", action="store_true",
                        help="do not compare with the live instances, even with a database configured")
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 when the live instances serve another policy revision than this configuration")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = resolve_config_dir(args.config)
    caps = sandbox.detect()
    try:
        config = load_config(root)
    except ConfigError as exc:
        if args.json:
            print_json(
                {
                    "ok": False,
                    "config": str(root),
                    "errors": [
                        {"file": p.file, "line": p.line, "column": p.column, "field": p.field, "message": p.message}
                        for p in exc.problems
                    ],
                }
            )
        else:
            print(f"{root}: {exc}", file=sys.stderr)
        return 1
    summary = summarise(config, caps)
    summary["sandbox"]["trial_call"] = trial_call(config)
    fleet_warnings: list[str] = []
    url = None if args.no_instances else _database_url(args, root)
    if url is not None:
        from .fleet import compare, instances_on  # psycopg loads only when a database is configured

        instances = instances_on(url)  # a PgError (unreachable): one line, exit 2, from main
        summary["instances"] = [attrs.asdict(serving) for serving in instances]
        fleet_warnings = compare(config.policy_revision, instances)
    if args.json:
        print_json({"ok": True, **summary, "fleet_warnings": fleet_warnings})
    else:
        print(render(summary))
        for warning in fleet_warnings:
            print(f"warning: {warning}", file=sys.stderr)
    # A sandbox that cannot run the calculator is not healthy, whatever the probe said.
    if summary["sandbox"]["trial_call"].startswith("FAILED"):
        return 1
    return 3 if args.strict and fleet_warnings else 0


def _database_url(args: argparse.Namespace, root: Path) -> str | None:
    """The database to list the instances from: the option, the environment, the settings file."""
    url = args.database_url or os.environ.get("SCONNECT_DATABASE_URL")
    if not url:
        from ..server.options import read_server_file

        named = os.environ.get("SCONNECT_SERVER_CONFIG")
        server_file = Path(named) if named else root / "sconnect.yaml"
        found = read_server_file(server_file).get("database_url") if server_file.is_file() else None
        url = found if isinstance(found, str) else None
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise UsageError("the database URL: a PostgreSQL URL starts with postgresql://")
    return url or None


def summarise(config: Config, caps: Any) -> dict[str, Any]:
    by_level: dict[str, list[str]] = {str(level): [] for level in LEVEL_NAMES}
    for tool in sorted(config.tools.values(), key=lambda t: t.name):
        by_level[str(tool.permission_level)].append(tool.name)
    return {
        "config": config.root,
        "config_revision": config.policy_revision,
        "agents": {
            agent.name: {"model": agent.model_summary, "tools": list(agent.tools), "resources": list(agent.resources)}
            for agent in sorted(config.agents.values(), key=lambda a: a.name)
        },
        "models": {
            name: {"provider": named.model.provider, "model": getattr(named.model, "model", ""),
                   "base_url": getattr(named.model, "base_url", "")}
            for name, named in sorted(config.models.items())
        },
        "tools_by_level": by_level,
        "resources": {key: res.description for key, res in sorted(config.resources.items())},
        "policies": {
            policy.name: {"rules": [rule.id for rule in policy.rules], "roles": sorted(policy.roles)}
            for policy in config.policies
        },
        "sandbox": {
            "backend": caps.default_backend,
            "summary": caps.summary,
            "seccomp": {
                "in_force": caps.seccomp_problem is None,
                "why": caps.seccomp_problem or "filter built with libseccomp, loaded into every tool",
                "tools_refused": caps.seccomp_problem is not None and not caps.allow_weak,
            },
            "nested_user_namespaces": "disabled" if caps.disable_userns else "denied by seccomp only",
            "scratch": "/tmp, /dev/shm and the work dir are tmpfs sized from each tool's memory budget",
            "memory_cgroup": caps.memory_cgroup,
            "workspace_disk": _workspace_disk(),
            "pool": {
                "available": caps.pool_problem() is None,
                "why": caps.pool_problem()
                or "warm bubblewrap sandbox per tool, one pre-forked restricted worker per call",
                "tools": sorted(t.name for t in config.tools.values() if t.sandbox.isolation == "pool"),
            },
            "sandbox_uid": sandbox.SANDBOX_UID if caps.running_as_root else None,
        },
        "warnings": list(config.warnings),
    }


def _workspace_disk() -> str:
    """How a subject's workspace is bounded: a volume of its own (hard), or the polled quota."""
    from ..toolrun import VOLUME_ENV, volume_bytes

    size = volume_bytes()
    if size is None:
        return f"each tool's workspace_quota, polled (no hard bound: {VOLUME_ENV} is not set)"
    problem = sandbox.volume_problem()
    if problem is not None:
        return f"each tool's workspace_quota, polled ({VOLUME_ENV} is set, but volumes are unavailable: {problem})"
    return f"a volume of {size} bytes per workspace (hard bound, {VOLUME_ENV}), and each tool's quota inside it"


def trial_call(config: Config) -> str:
    """Run the calculator (or the first level-0 Python tool) for real; its outcome, one line."""
    from ..toolrun import try_call

    tool = config.tools.get("calculator")
    arguments: dict[str, Any] = {"expression": "6*7"}
    if tool is None:
        return "skipped (no calculator tool in this configuration)"
    try:
        result = try_call(tool, arguments)
    except sandbox.SandboxError as exc:
        return f"FAILED: calculator: {exc}"
    if result.status != "ok":
        return f"FAILED: calculator {result.status}: {result.message}"
    value = result.output.get("result") if isinstance(result.output, dict) else result.output
    return f"calculator 6*7 = {value} ok ({result.backend}, {result.wall_time_s * 1000:.0f} ms)"


def render(summary: dict[str, Any]) -> str:
    lines = [f"configuration OK: {summary['config']}"]
    agents = summary["agents"]
    lines.append(f"agents ({len(agents)}):")
    for name, agent in agents.items():
        counts = f"{len(agent['tools'])} tools, {len(agent['resources'])} resources"
        lines.append(f"  {name:<14} model {agent['model']}, {counts}")
    models = summary.get("models", {})
    lines.append(f"models ({len(models)}): " + (", ".join(
        f"{name} ({m['provider']}{' ' + m['model'] + ' at ' + m['base_url'] if m['base_url'] else ''})"
        for name, m in models.items()) or "-"))
    count = sum(map(len, summary["tools_by_level"].values()))
    lines.append(f"tools ({count}) by permission level:")
    for level, names in summary["tools_by_level"].items():
        label = f"{level} {LEVEL_NAMES[int(level)]}"
        lines.append(f"  {label:<22} {', '.join(names) or '-'}")
    lines.append(f"resource hosts ({len(summary['resources'])}): {', '.join(summary['resources']) or '-'}")
    lines.append(f"policies ({len(summary['policies'])}):")
    for name, policy in summary["policies"].items():
        lines.append(f"  {name:<14} {len(policy['rules'])} rules, roles: {', '.join(policy['roles']) or '-'}")
    box = summary["sandbox"]
    lines.append(box["summary"])
    seccomp = box["seccomp"]
    lines.append(f"  seccomp filter in force: {'yes' if seccomp['in_force'] else 'NO'} ({seccomp['why']})")
    lines.append(f"  nested user namespaces: {box['nested_user_namespaces']}")
    lines.append(f"  scratch space: {box['scratch']}")
    lines.append(f"  {box['memory_cgroup']}")
    lines.append(f"  workspace disk: {box['workspace_disk']}")
    pool = box["pool"]
    lines.append(
        f"  pool backend: {'available' if pool['available'] else 'UNAVAILABLE'} ({pool['why']}); "
        f"tools {'on it' if pool['available'] else 'declaring it (run on namespaces instead)'}: "
        f"{', '.join(pool['tools']) or '-'}"
    )
    if "trial_call" in box:
        lines.append(f"  trial call: {box['trial_call']}")
    if "instances" in summary:
        from .fleet import render_instances

        lines.extend(render_instances(summary["config_revision"], summary["instances"]))
    for warning in summary["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
