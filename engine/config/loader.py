"""Load a configuration directory into a :class:`Config`, or report all that is wrong.

Layout: ``agents.d/``, ``tools.d/``, ``resources.d/`` and ``policies/`` under one
root, one YAML document per ``*.yaml``/``*.yml`` file; other files, hidden
files and sub-directories (``policies/tests/`` holds policy test cases) are not
loaded.  Each file goes through: YAML with node marks and duplicate-key
refusal -> the kind's JSON Schema -> cattrs structuring (units parsed) ->
checks within the file.  Checks across files run last.  Every problem of the
load is collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError, ConfigProblem
from . import checks
from .converter import converter, structure_errors
from .model import Agent, Config, McpServerFile, Policy, PolicyRule, Resource, Source, Tool
from .schemas import validate
from .yamldoc import Document, read_document

KIND_DIRS = {"agent": "agents.d", "tool": "tools.d", "resource": "resources.d", "policy": "policies"}
_TYPES: dict[str, Any] = {"agent": Agent, "tool": Tool, "resource": Resource, "policy": Policy}
T = TypeVar("T")


def config_files(root: Path, kind: str) -> list[Path]:
    """The files of one kind that are loaded, in name order."""
    directory = root / KIND_DIRS[kind]
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in (".yaml", ".yml") and not path.name.startswith(".") and path.is_file()
    )


def load_config(root: Path | str) -> Config:
    """Load and check everything under ``root``; raise ConfigError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError([ConfigProblem(str(root), 0, 0, "", "configuration directory does not exist")])
    if not any((root / name).is_dir() for name in KIND_DIRS.values()):
        expected = ", ".join(f"{name}/" for name in KIND_DIRS.values())
        raise ConfigError([ConfigProblem(str(root), 0, 0, "", f"not a configuration directory: expected {expected}")])

    problems: list[ConfigProblem] = []
    loaded: dict[str, list[tuple[Any, Document]]] = {}
    # Names declared in files that did not load: references to them say so instead of "unknown".
    failed: dict[str, str] = {}
    for kind in KIND_DIRS:
        loaded[kind] = []
        for path in config_files(root, kind):
            before = len(problems)
            result = _load_file(kind, path, root, problems)
            if result is not None:
                loaded[kind].append(result)
            else:
                name = _declared_name(kind, path, problems[before:])
                if name:
                    failed[name] = path.relative_to(root).as_posix()

    # An mcp_server file exposes several tools; every other tool file exactly one.
    exposed = [(tool, doc) for obj, doc in loaded["tool"] for tool in _exposed_tools(obj, doc)]
    tools = {tool.name: tool for tool, _ in exposed}
    agents = {agent.name: agent for agent, _ in loaded["agent"]}
    resources = {f"{res.scheme}://{res.name}": res for res, _ in loaded["resource"]}
    policies = [policy for policy, _ in loaded["policy"]]
    roles = {role for policy in policies for role in policy.roles}

    problems += checks.check_duplicates("tool", ((t.name, d) for t, d in exposed))
    problems += checks.check_duplicates("agent", ((a.name, d) for a, d in loaded["agent"]))
    problems += checks.check_duplicates(
        "resource host", ((f"{r.scheme}://{r.name}", d) for r, d in loaded["resource"])
    )
    problems += checks.check_duplicates("policy", ((p.name, d) for p, d in loaded["policy"]))
    problems += _duplicate_rule_ids(loaded["policy"])
    for agent, doc in loaded["agent"]:
        problems += checks.check_agent_references(agent, doc, tools, resources, failed)
    for policy, doc in loaded["policy"]:
        problems += checks.check_policy_references(policy, doc, tools, roles, failed)
    if problems:
        raise ConfigError(problems)

    warnings = [
        f"{tool.source}: no policy rule allows this tool, so every call is refused"
        for tool in tools.values()
        if not any(_rule_covers(rule, tool) for policy in policies for rule in policy.rules)
    ]
    return Config(
        root=str(root.resolve()),
        agents=MappingProxyType(agents),
        tools=MappingProxyType(tools),
        resources=MappingProxyType(resources),
        policies=tuple(policies),
        warnings=tuple(warnings),
    )


def _declared_name(kind: str, path: Path, problems: list[ConfigProblem]) -> str | None:
    """The name a file that failed to load meant to declare, when it can still be read."""
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # a file that does not even parse declares nothing we can name
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if kind == "resource" and isinstance(data.get("scheme"), str):
        return f"{data['scheme']}://{data['name']}"
    return data["name"]


def _load_file(kind: str, path: Path, root: Path, problems: list[ConfigProblem]) -> tuple[Any, Document] | None:
    display = path.relative_to(root).as_posix()
    doc = read_document(path, display)
    if isinstance(doc, list):
        problems += doc
        return None
    if not isinstance(doc.data, dict):
        problems.append(doc.problem([], f"expected a mapping of keys to values, found {type(doc.data).__name__}"))
        return None
    schema_problems = validate(kind, doc)
    if schema_problems:
        problems += schema_problems
        return None
    kind_type = McpServerFile if kind == "tool" and "mcp_server" in doc.data else _TYPES[kind]
    try:
        obj = converter.structure(doc.data, kind_type)
    except Exception as exc:  # cattrs raises ClassValidationError groups; all leaves are reported
        problems += [doc.problem(field, message) for field, message in structure_errors(exc)]
        return None
    obj = attrs.evolve(obj, source=Source(display, doc.locate([])[0]))
    if isinstance(obj, Policy):
        obj = attrs.evolve(obj, rules=tuple(_located_rules(obj, doc)))
    file_checks: dict[str, Callable[[], list[ConfigProblem]]] = {
        "tool": lambda: checks.check_tool(obj, doc),
        "agent": lambda: checks.check_agent(obj, doc),
        "resource": lambda: checks.check_resource(obj, doc, root),
        "policy": lambda: checks.check_policy(obj, doc),
    }
    found = file_checks[kind]()
    if found:
        problems += found
        return None
    return obj, doc


def _exposed_tools(obj: Tool | McpServerFile, doc: Document) -> tuple[Tool, ...]:
    if isinstance(obj, Tool):
        return (obj,)
    return tuple(
        attrs.evolve(tool, source=Source(doc.file, doc.locate(["mcp_server", "tools", tool.upstream.tool], key=True)[0]))
        for tool in obj.tools()
        if tool.upstream is not None
    )


def _located_rules(policy: Policy, doc: Document) -> list[PolicyRule]:
    return [
        attrs.evolve(rule, source=Source(doc.file, doc.locate(["rules", index])[0]))
        for index, rule in enumerate(policy.rules)
    ]


def _duplicate_rule_ids(policies: list[tuple[Policy, Document]]) -> list[ConfigProblem]:
    seen: dict[str, PolicyRule] = {}
    problems = []
    for policy, doc in policies:
        for index, rule in enumerate(policy.rules):
            if rule.id in seen:
                problems.append(
                    doc.problem(["rules", index, "id"], f"rule id {rule.id!r} is already used at {seen[rule.id].source}")
                )
            else:
                seen[rule.id] = rule
    return problems


def _rule_covers(rule: PolicyRule, tool: Tool) -> bool:
    import fnmatch

    if rule.effect == "deny" or "tool.call" not in rule.actions:
        return False
    targets = rule.targets
    named = not targets.tools or any(fnmatch.fnmatchcase(tool.name, p) for p in targets.tools)
    levelled = not targets.levels or tool.permission_level in targets.levels
    return named and levelled
