"""Load a configuration directory into a :class:`Config`, or report all that is wrong.

Layout: ``models.d/``, ``agents.d/``, ``tools.d/``, ``resources.d/`` and ``policies/`` under one
root, one YAML document per ``*.yaml``/``*.yml`` file; other files, hidden
files and sub-directories (``policies/tests/`` holds policy test cases) are not
loaded.  Each file goes through: where its links lead (never out of the
configuration) -> YAML with node marks and duplicate-key refusal, within the
bounds of :mod:`.bounds` -> the kind's JSON Schema -> cattrs structuring
(units parsed) -> checks within the file (a ``python:`` tool's module is
located without importing it).  Checks across files run last.  Every problem
of the load is collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError, ConfigProblem
from ..policy._match import may_grant_tool
from ..policy._revision import revision_of
from . import checks, tool_kinds
from .bounds import MAX_FILES_PER_DIR, within
from .converter import converter, structure_errors
from .model import (
    Agent,
    Config,
    NamedModel,
    Policy,
    PolicyRule,
    Resource,
    Role,
    RulesModel,
    Source,
    Subjects,
    Targets,
    Tool,
)
from .schemas import validate
from .yamldoc import Document, PathSegment, read_document

KIND_DIRS = {
    "agent": "agents.d", "tool": "tools.d", "resource": "resources.d", "policy": "policies", "model": "models.d",
}
_TYPES: dict[str, Any] = {"model": NamedModel, "agent": Agent, "tool": Tool, "resource": Resource, "policy": Policy}
T = TypeVar("T")


def config_files(root: Path, kind: str) -> list[Path]:
    """The files of one kind that are loaded, in name order (what the reload watcher watches)."""
    return _scan(Path(root), kind)[0]


def _scan(root: Path, kind: str) -> tuple[list[Path], list[ConfigProblem]]:
    """The candidate files of one directory, or why the directory is refused.

    A directory holding more than ``MAX_FILES_PER_DIR`` candidates is refused
    without listing the rest.  Files are only listed here; where each one leads
    is checked before it is read (:func:`.bounds.within`).
    """
    name = KIND_DIRS[kind]
    directory = root / name
    if not directory.is_dir():
        return [], []
    found: list[Path] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith((".yaml", ".yml")):
                    continue
                if not entry.is_file():  # follows links: a dangling one or a directory is skipped
                    continue
                found.append(Path(entry.path))
                if len(found) > MAX_FILES_PER_DIR:
                    return [], [ConfigProblem(
                        name, 0, 0, "", f"holds more than {MAX_FILES_PER_DIR} configuration files: refused"
                    )]
    except OSError as exc:
        return [], [ConfigProblem(name, 0, 0, "", f"cannot list: {exc.strerror}")]
    return sorted(found), []


def load_config(root: Path | str) -> Config:
    """Load and check everything under ``root``; raise ConfigError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError([ConfigProblem(str(root), 0, 0, "", "configuration directory does not exist")])
    if not any((root / name).is_dir() for name in KIND_DIRS.values()):
        expected = ", ".join(f"{name}/" for name in KIND_DIRS.values())
        raise ConfigError([ConfigProblem(str(root), 0, 0, "", f"not a configuration directory: expected {expected}")])

    problems: list[ConfigProblem] = []
    # Files that loaded cleanly make the configuration; every file that could be
    # structured is checked against the others, and so are the well-formed
    # references of agents and policies that failed their schema, so that one
    # file's mistakes are all reported in one run, not one kind per run.
    loaded: dict[str, list[tuple[Any, Document]]] = {}
    checked: dict[str, list[tuple[Any, Document]]] = {}
    partial: dict[str, list[tuple[Any, Document]]] = {}
    # Names declared in files that did not load: references to them say so instead of "unknown".
    failed: dict[str, str] = {}
    # Places in files that failed their schema, already reported: a reference check says no more there.
    reported: set[tuple[str, int, int]] = set()
    for kind in KIND_DIRS:
        loaded[kind], checked[kind], partial[kind] = [], [], []
        paths, refused = _scan(root, kind)
        problems += refused
        for path in paths:
            before = len(problems)
            obj, doc = _load_file(kind, path, root, problems)
            if obj is not None and doc is not None:
                checked[kind].append((obj, doc))
                if len(problems) == before:
                    loaded[kind].append((obj, doc))
                    continue
            elif doc is not None and (stand_in := _stand_in(kind, doc.data)) is not None:
                # Not even structured (a schema error): its references are still worth checking.
                partial[kind].append((stand_in, doc))
                reported.update((p.file, p.line, p.column) for p in problems[before:])
            name = _declared_name(kind, obj, doc)
            if name:
                failed[name] = path.relative_to(root).as_posix()

    # A file of some kinds (mcp_server) exposes several tools; every other tool file exactly one.
    exposed = [(tool, doc) for obj, doc in loaded["tool"] for tool in _exposed_tools(obj, doc)]
    checked_tools = [(tool, doc) for obj, doc in checked["tool"] for tool in _exposed_tools(obj, doc)]
    tools = {tool.name: tool for tool, _ in exposed}
    models = {model.name: model for model, _ in loaded["model"]}
    agents = {agent.name: agent for agent, _ in loaded["agent"]}
    resources = {f"{res.scheme}://{res.name}": res for res, _ in loaded["resource"]}
    policies = [policy for policy, _ in loaded["policy"]]
    roles = {role for policy, _ in checked["policy"] + partial["policy"] for role in policy.roles}

    problems += checks.check_duplicates("tool", ((t.name, d) for t, d in checked_tools))
    problems += checks.check_duplicates("model", ((m.name, d) for m, d in checked["model"]))
    problems += checks.check_duplicates("agent", ((a.name, d) for a, d in checked["agent"]))
    problems += checks.check_duplicates(
        "resource host", ((f"{r.scheme}://{r.name}", d) for r, d in checked["resource"])
    )
    problems += checks.check_duplicates("policy", ((p.name, d) for p, d in checked["policy"]))
    problems += _duplicate_rule_ids(checked["policy"])
    references: list[ConfigProblem] = []
    for agent, doc in checked["agent"] + partial["agent"]:
        references += checks.check_agent_references(agent, doc, tools, resources, failed)
        references += checks.check_agent_models(agent, doc, models, failed)
        references += checks.check_agent_delegates(agent, doc, agents, failed)
    for agent, doc in checked["agent"]:
        references += checks.check_agent_learning(agent, doc, tools, resources)
    for tool, doc in checked_tools:
        if (check_references := tool_kinds.kind_of(tool).check_references) is not None:
            references += check_references(tool, doc, tools, failed)
    for policy, doc in checked["policy"] + partial["policy"]:
        references += checks.check_policy_references(policy, doc, tools, roles, failed)
        references += checks.check_policy_agents(policy, doc, agents, failed)
    problems += [p for p in references if (p.file, p.line, p.column) not in reported]
    if problems:
        raise ConfigError(problems)

    warnings = [
        f"{tool.source}: no policy rule allows this tool, so every call is refused"
        for tool in tools.values()
        if not any(may_grant_tool(rule, tool.name, tool.permission_level)
                   for policy in policies for rule in policy.rules)
    ]
    warnings += checks.delegation_loops(agents)
    return Config(
        root=str(root.resolve()),
        agents=MappingProxyType(agents),
        tools=MappingProxyType(tools),
        resources=MappingProxyType(resources),
        policies=tuple(policies),
        models=MappingProxyType(models),
        warnings=tuple(warnings),
        policy_revision=revision_of(root, (policy.source.file for policy in policies)),
    )


def _stand_in(kind: str, data: Any) -> Agent | Policy | None:
    """An agent or policy holding only the references of a file that failed its schema.

    Only well-shaped parts are kept (a list of strings where names belong);
    a malformed rule becomes an empty one, so that indices, and so lines, stay right.
    """
    if not isinstance(data, dict):
        return None

    def names(value: Any) -> tuple[str, ...]:
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else ()

    def part(value: Any, key: str) -> Any:
        return value.get(key) if isinstance(value, dict) else None

    if kind == "agent":
        return Agent(
            name="", description="",
            model=data["model"] if isinstance(data.get("model"), str) else RulesModel(provider="rules"),
            models=names(data.get("models")),
            tools=names(data.get("tools")), resources=names(data.get("resources")),
            delegates=names(data.get("delegates")),
        )
    if kind == "policy":
        rules: list[Any] = data["rules"] if isinstance(data.get("rules"), list) else []
        return Policy(
            name="", description="",
            roles={str(role): Role() for role in data.get("roles", {})} if isinstance(data.get("roles"), dict) else {},
            rules=tuple(
                PolicyRule(
                    id="", effect="allow",
                    subjects=Subjects(roles=names(part(part(rule, "subjects"), "roles"))),
                    targets=Targets(tools=names(part(part(rule, "targets"), "tools"))),
                )
                for rule in rules
            ),
        )
    return None


def _declared_name(kind: str, obj: Any, doc: Document | None) -> str | None:
    """The name a file that failed to load meant to declare, when it parsed far enough to say."""
    if obj is not None:
        return f"{obj.scheme}://{obj.name}" if kind == "resource" else str(obj.name)
    data = doc.data if doc is not None else None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if kind == "resource" and isinstance(data.get("scheme"), str):
        return f"{data['scheme']}://{data['name']}"
    return data["name"]


def _load_file(
    kind: str, path: Path, root: Path, problems: list[ConfigProblem]
) -> tuple[Any | None, Document | None]:
    """The file's object and document, appending its problems; the object is None when it cannot be built.

    An object whose own checks failed is still returned, so that its references
    to other files are checked too.
    """
    display = path.relative_to(root).as_posix()
    if not within(path, root, path.parent):
        problems.append(ConfigProblem(
            display, 0, 0, "", "is a symbolic link leading outside the configuration directory: refused, not read"
        ))
        return None, None
    # Checked above for a clear error; checked again on the open descriptor, so that a link
    # swapped in between is refused too.
    doc = read_document(path, display, inside=(root, path.parent))
    if isinstance(doc, list):
        problems += doc
        return None, None
    if not isinstance(doc.data, dict):
        problems.append(doc.problem([], f"expected a mapping of keys to values, found {type(doc.data).__name__}"))
        return None, doc
    schema_problems = validate(kind, doc)
    if schema_problems:
        problems += schema_problems
        return None, doc
    declared = tool_kinds.declared(doc.data) if kind == "tool" else None
    kind_type = (declared.file_class or Tool) if declared is not None else _TYPES[kind]
    # A kind may fix part of its files itself (builtin: its parameters are the engine's).
    data = declared.fill(doc.data) if declared is not None and declared.fill is not None else doc.data
    try:
        obj = converter.structure(data, kind_type)
    except Exception as exc:  # cattrs raises ClassValidationError groups; all leaves are reported
        problems += [doc.problem(_yaml_path(field, declared), message) for field, message in structure_errors(exc)]
        return None, doc
    obj = attrs.evolve(obj, source=Source(display, doc.locate([])[0]))
    if isinstance(obj, Policy):
        obj = attrs.evolve(obj, rules=tuple(_located_rules(obj, doc)))
    file_checks: dict[str, Callable[[], list[ConfigProblem]]] = {
        "model": lambda: checks.check_model(obj, doc),
        "tool": lambda: checks.check_tool(obj, doc) if isinstance(obj, Tool) else [],
        "agent": lambda: checks.check_agent(obj, doc),
        "resource": lambda: checks.check_resource(obj, doc, root),
        "policy": lambda: checks.check_policy(obj, doc),
    }
    problems += file_checks[kind]()
    if isinstance(obj, Agent) and obj.python:
        loaded_class, found = checks.check_agent_class(obj, doc, root)
        problems += found
        if loaded_class is not None:
            obj = attrs.evolve(obj, python_class=loaded_class)
    if kind == "tool":
        # The kind's own checks; it may complete the tool (python: where its package is).
        obj, found = tool_kinds.kind_of(obj).check(obj, doc, root)
        problems += found
    return obj, doc


def _yaml_path(path: list[PathSegment], declared: tool_kinds.ToolKind | None) -> list[PathSegment]:
    # A registered kind's settings are structured into Tool.options from the key that declares it.
    if declared is not None and declared.options_class is not None and path[:1] == ["options"]:
        return [declared.name, *path[1:]]
    return path


def _exposed_tools(obj: Any, doc: Document) -> tuple[Tool, ...]:
    """The tools a tools.d/ file declares: itself, or those its kind exposes (mcp_server)."""
    expose = tool_kinds.kind_of(obj).expose
    return expose(obj, doc) if expose is not None else (obj,)


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
                    doc.problem(
                        ["rules", index, "id"], f"rule id {rule.id!r} is already used at {seen[rule.id].source}"
                    )
                )
            else:
                seen[rule.id] = rule
    return problems
