"""``sconnect check``: load the whole configuration and summarise it, or list every error."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import sandbox

from ..config import LEVEL_NAMES, Config, load_config, resolve_config_dir
from ..errors import ConfigError
from .output import print_json


def register(commands: Any) -> None:
    from .args import add_config_option

    parser = commands.add_parser("check", help="validate the configuration and summarise it")
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary or the errors as JSON")
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
    if args.json:
        print_json({"ok": True, **summary})
    else:
        print(render(summary))
    # A sandbox that cannot run the calculator is not healthy, whatever the probe said.
    return 1 if summary["sandbox"]["trial_call"].startswith("FAILED") else 0


def summarise(config: Config, caps: Any) -> dict[str, Any]:
    by_level: dict[str, list[str]] = {str(level): [] for level in LEVEL_NAMES}
    for tool in sorted(config.tools.values(), key=lambda t: t.name):
        by_level[str(tool.permission_level)].append(tool.name)
    return {
        "config": config.root,
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
    for warning in summary["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
