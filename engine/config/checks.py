"""Checks a schema cannot express: inside one file, and across files.

Each check takes the structured object and its :class:`Document` (to point at
the right line) and returns problems; nothing here raises.  The cross-file
checks run only after every file has loaded, so that one broken file does not
hide the mistakes of the others.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import re
import shutil
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigProblem
from .model import (
    Agent,
    ApiResource,
    DbResource,
    FileResource,
    McpServerFile,
    Policy,
    Resource,
    RulesModel,
    Tool,
    definition_digest,
)
from .schemas import validate_parameters
from .yamldoc import Document

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names used by a ``str.format``-style template ("{{" escapes)."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            return template_fields(value)
        except ValueError:
            return []
    if isinstance(value, Mapping):
        return [field for item in value.values() for field in _placeholders(item)]
    if isinstance(value, list | tuple):
        return [field for item in value for field in _placeholders(item)]
    return []


_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def check_tool(tool: Tool | McpServerFile, doc: Document) -> list[ConfigProblem]:
    if isinstance(tool, McpServerFile):
        return check_mcp_server(tool, doc)
    problems = validate_parameters(doc, ["parameters"])
    if tool.python:
        problem = _python_target_problem(tool.python)
        if problem:
            problems.append(doc.problem(["python"], problem))
    if tool.command:
        problem = _command_problem(tool.command[0], tool.sandbox.env.get("PATH", DEFAULT_TOOL_PATH))
        if problem:
            problems.append(doc.problem(["command", 0], problem))
    properties = tool.parameters.get("properties", {})
    for index, name in enumerate(tool.secret_arguments):
        if name not in properties:
            problems.append(
                doc.problem(["secret_arguments", index], f"{name!r} is not one of the tool's parameters")
            )
    return problems


DEFAULT_TOOL_PATH = "/usr/local/bin:/usr/bin:/bin"


def check_mcp_server(server_file: McpServerFile, doc: Document) -> list[ConfigProblem]:
    """An mcp_server file: its program exists, every allowed tool is pinned, and each pin
    is intact (its digest is that of its own description and parameters)."""
    problems: list[ConfigProblem] = []
    server = server_file.mcp_server
    problem = _command_problem(server.command[0], server_file.sandbox.env.get("PATH", DEFAULT_TOOL_PATH))
    if problem:
        problems.append(doc.problem(["mcp_server", "command", 0], problem))
    for upstream, entry in server.tools.items():
        where: list[Any] = ["mcp_server", "tools", upstream]
        if entry.as_ is None and not _TOOL_NAME.fullmatch(server_file.exposed_name(upstream)):
            problems.append(
                doc.problem(
                    where,
                    f"the exposed name {server_file.exposed_name(upstream)!r} is not a valid tool name: "
                    "give one with 'as:'",
                    key=True,
                )
            )
        if entry.pinned is None:
            problems.append(
                doc.problem(
                    where,
                    f"not pinned: review the server's definition with `sconnect mcp pin {doc.file}`",
                    key=True,
                )
            )
            continue
        problems += validate_parameters(doc, [*where, "pinned", "parameters"])
        if entry.pinned.digest != definition_digest(entry.pinned.description, entry.pinned.parameters):
            problems.append(
                doc.problem(
                    [*where, "pinned", "digest"],
                    "does not match the pinned description and parameters (edited by hand?): "
                    f"review and pin again with `sconnect mcp pin {doc.file}`",
                )
            )
    return problems


def _python_target_problem(target: str) -> str | None:
    """Whether ``module:function`` names a module that exists and defines that name.

    The module is found without being run: its source is parsed and its top-level
    definitions read, so checking a config never executes tool code.
    """
    module, function = target.split(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"no Python module named {module!r} is installed"
    if spec.origin is None or not spec.origin.endswith(".py"):
        return None  # a namespace or compiled module: nothing to read, trust it
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"module {module!r} cannot be read: {exc}"
    if function not in _top_level_names(tree):
        return f"module {module!r} has no function {function!r}"
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _command_problem(program: str, path: str) -> str | None:
    if "/" in program:
        if not os.access(program, os.X_OK) or not os.path.isfile(program):
            return f"{program!r} does not exist or is not executable"
        return None
    if shutil.which(program, path=path) is None:
        return f"{program!r} is not found on the tool's PATH ({path})"
    return None


def check_agent(agent: Agent, doc: Document) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if not isinstance(agent.model, RulesModel):
        return problems
    for index, rule in enumerate(agent.model.rules):
        where = ["model", "rules", index]
        try:
            groups = set(re.compile(rule.match).groupindex)
        except re.error as exc:
            problems.append(doc.problem([*where, "match"], f"not a valid regular expression: {exc}"))
            continue
        if rule.tool is not None and rule.tool not in agent.tools and rule.tool not in agent.client_tools:
            problems.append(
                doc.problem([*where, "tool"], f"tool {rule.tool!r} is not in this agent's tools or client_tools")
            )
        if rule.resource is not None:
            host = "/".join(rule.resource.split("/")[:3])
            if host not in agent.resources:
                problems.append(doc.problem([*where, "resource"], f"resource host {host!r} is not in this agent's resources"))
            for field in _placeholders(rule.resource):
                if field not in groups:
                    problems.append(
                        doc.problem([*where, "resource"], f"placeholder {{{field}}} is not a named group of match")
                    )
        for key, value in rule.arguments.items():
            for field in _placeholders(value):
                if field not in groups:
                    problems.append(
                        doc.problem(
                            [*where, "arguments", key],
                            f"placeholder {{{field}}} is not a named group of match",
                        )
                    )
        try:
            fields = template_fields(rule.answer)
        except ValueError as exc:
            problems.append(doc.problem([*where, "answer"], f"not a valid template: {exc}"))
            continue
        for field in fields:
            head = field.split(".")[0].split("[")[0]
            if head == "result" and rule.tool is None and rule.resource is None:
                problems.append(
                    doc.problem([*where, "answer"], "{result} is only available in a rule with a tool or a resource")
                )
            elif head not in groups and head != "result":
                problems.append(
                    doc.problem([*where, "answer"], f"placeholder {{{field}}} is not a named group of match nor result")
                )
    return problems


def check_resource(resource: Resource, doc: Document, root: Path) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    if isinstance(resource, FileResource):
        for index, glob in enumerate(resource.globs):
            if glob.startswith("/") or ".." in glob.split("/"):
                problems.append(doc.problem(["globs", index], f"{glob!r} must be relative to root, without '..'"))
    elif isinstance(resource, DbResource):
        if ".." in Path(resource.database).parts:
            problems.append(doc.problem(["database"], f"{resource.database!r} must not climb out with '..'"))
        if resource.seed is not None and not (root / resource.seed).is_file():
            problems.append(doc.problem(["seed"], f"seed file {resource.seed!r} does not exist"))
        for index, query in enumerate(resource.queries):
            problems += _check_template(doc, ["queries", index], query.path, query.params, set(re.findall(r":(\w+)", query.sql)))
    elif isinstance(resource, ApiResource):
        from urllib.parse import urlsplit

        host = urlsplit(resource.base_url).hostname or ""
        if resource.allowed_hosts and host not in resource.allowed_hosts:
            problems.append(doc.problem(["allowed_hosts"], f"the base URL's host {host!r} is not in allowed_hosts"))
        for index, route in enumerate(resource.routes):
            problems += _check_template(doc, ["routes", index], route.path, route.params, set(_PLACEHOLDER.findall(route.target)))
    return problems


def _check_template(
    doc: Document, where: list[Any], path: str, params: Mapping[str, str], used: set[str]
) -> list[ConfigProblem]:
    problems = []
    declared = set(_PLACEHOLDER.findall(path))
    for name in sorted(used - declared):
        problems.append(doc.problem(where, f"{name!r} is used but is not a {{placeholder}} of path {path!r}"))
    for name in sorted(set(params) - declared):
        problems.append(doc.problem([*where, "params", name], f"{name!r} is not a {{placeholder}} of path {path!r}"))
    return problems


def check_policy(policy: Policy, doc: Document) -> list[ConfigProblem]:
    problems = []
    for index, rule in enumerate(policy.rules):
        for c_index, condition in enumerate(rule.conditions):
            if condition.matches is not None:
                try:
                    re.compile(condition.matches)
                except re.error as exc:
                    problems.append(
                        doc.problem(["rules", index, "conditions", c_index, "matches"], f"not a valid regular expression: {exc}")
                    )
    return problems


# --- across files -------------------------------------------------------------


def check_duplicates(kind: str, entries: Iterable[tuple[str, Document]]) -> list[ConfigProblem]:
    """The same name declared in two files: reported on the second, naming the first."""
    first: dict[str, Document] = {}
    problems = []
    for name, doc in entries:
        if name in first:
            other = first[name]
            line, _ = other.locate(["name"])
            problems.append(
                doc.problem(["name"], f"{kind} {name!r} is already declared in {other.file}:{line}")
            )
        else:
            first[name] = doc
    return problems


def check_agent_references(
    agent: Agent, doc: Document, tools: Mapping[str, Tool], resources: Mapping[str, Resource],
    failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    failed = failed or {}
    problems = []
    for index, name in enumerate(agent.tools):
        if name in tools:
            continue
        if name in failed:
            problems.append(doc.problem(["tools", index], f"tool {name!r} did not load (see {failed[name]})"))
        else:
            problems.append(doc.problem(["tools", index], f"unknown tool {name!r}{_known(tools)}"))
    for index, name in enumerate(agent.resources):
        if name in resources:
            continue
        if name in failed:
            problems.append(doc.problem(["resources", index], f"resource host {name!r} did not load (see {failed[name]})"))
        else:
            problems.append(doc.problem(["resources", index], f"unknown resource host {name!r}{_known(resources)}"))
    return problems


def check_policy_references(
    policy: Policy, doc: Document, tools: Mapping[str, Tool], roles: set[str], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    failed = failed or {}
    problems = []
    for index, rule in enumerate(policy.rules):
        where = ["rules", index]
        for r_index, role in enumerate(rule.subjects.roles):
            if role not in roles:
                problems.append(
                    doc.problem([*where, "subjects", "roles", r_index], f"unknown role {role!r}{_known(roles)}")
                )
        for t_index, pattern in enumerate(rule.targets.tools):
            is_glob = any(char in pattern for char in "*?[")
            if pattern in failed and pattern not in tools:
                problems.append(
                    doc.problem([*where, "targets", "tools", t_index], f"tool {pattern!r} did not load (see {failed[pattern]})")
                )
            elif not is_glob and pattern not in tools:
                problems.append(
                    doc.problem([*where, "targets", "tools", t_index], f"unknown tool {pattern!r}{_known(tools)}")
                )
            elif is_glob and not fnmatch.filter(tools, pattern):
                problems.append(
                    doc.problem([*where, "targets", "tools", t_index], f"the pattern {pattern!r} matches no tool")
                )
    return problems


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return f" (known: {', '.join(listed)})" if listed else " (none are declared)"
