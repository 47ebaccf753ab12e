"""Checks a schema cannot express: inside one file, and across files.

Each check takes the structured object and its :class:`Document` (to point at
the right line) and returns problems; nothing here raises.  The cross-file
checks run only after every file has loaded, so that one broken file does not
hide the mistakes of the others.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import stat
import string
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigProblem
from ..globs import GLOB_CHARS, glob_matches
from ..linear_re import RegexError, compile_linear
from ..suggest import unknown_name
from .bounds import MAX_MODULE_BYTES, MAX_PARAMETERS_BYTES, format_bytes, within
from .model import (
    ASK_AGENT,
    BUILTIN_TOOLS,
    POST_TO_BOARD,
    READ_BOARD,
    Agent,
    McpServerFile,
    NamedModel,
    Policy,
    Resource,
    RulesModel,
    SandboxNeeds,
    Tool,
    definition_digest,
)
from .model_providers import provider_of
from .modules import Located, default_search, locate
from .resource_kinds import kind_of
from .schemas import validate_parameters
from .yamldoc import Document, PathSegment

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


def check_tool(tool: Tool, doc: Document) -> list[ConfigProblem]:
    """What every tool's file must get right, whatever its kind (the kind checks its own key)."""
    # A kind may fix the parameters itself (builtin: engine/toolkinds/builtin.py): then the file has none.
    problems = _parameters_problems(doc) if "parameters" in doc.data else []
    if tool.name in BUILTIN_TOOLS:
        problems.append(doc.problem(["name"], f"{tool.name!r} is the name of a built-in tool "
                                              f"({', '.join(BUILTIN_TOOLS)}): choose another"))
    problems += network_problems(tool.sandbox, doc)
    properties = tool.parameters.get("properties", {})
    for index, name in enumerate(tool.secret_arguments):
        if name not in properties:
            problems.append(
                doc.problem(["secret_arguments", index], f"{name!r} is not one of the tool's parameters")
            )
    return problems


DEFAULT_TOOL_PATH = "/usr/local/bin:/usr/bin:/bin"
# mcp_server.restart_backoff's floor.
MIN_RESTART_BACKOFF_S = 0.01


def network_problems(needs: SandboxNeeds, doc: Document, *, supported: bool = True) -> list[ConfigProblem]:
    """A ``sandbox.network`` list: each entry parses, and the tool's isolation can enforce it."""
    from ..netproxy import parse_entry

    if isinstance(needs.network, bool):
        return []
    where: list[PathSegment] = ["sandbox", "network"]
    if not supported:
        return [doc.problem(where, "a list of destinations is not supported for mcp_server files yet: "
                                   "use true or false")]  # fmt: skip
    problems = []
    for index, entry in enumerate(needs.network):
        try:
            parse_entry(entry)
        except ValueError as exc:
            problems.append(doc.problem([*where, index], str(exc)))
    if needs.isolation != "namespaces":
        problems.append(doc.problem(
            where,
            f"a list of destinations needs isolation: namespaces (not {needs.isolation}): only a "
            "bubblewrap sandbox gives the tool a network namespace whose only way out is the proxy",
        ))  # fmt: skip
    return problems


def check_mcp_server(server_file: McpServerFile, doc: Document) -> list[ConfigProblem]:
    """An mcp_server file: its program exists, every allowed tool is pinned, and each pin
    is intact (its digest is that of its own description and parameters)."""
    problems = network_problems(server_file.sandbox, doc, supported=False)
    server = server_file.mcp_server
    problem = command_problem(server.command[0], server_file.sandbox.env.get("PATH", DEFAULT_TOOL_PATH))
    if problem:
        problems.append(doc.problem(["mcp_server", "command", 0], problem))
    if server.restart_backoff < MIN_RESTART_BACKOFF_S:
        # A server failing in a loop must not spin the sandbox launcher.
        problems.append(doc.problem(["mcp_server", "restart_backoff"],
                                    f"{server.restart_backoff:g}s is too short: at least 10ms"))
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


def _parameters_problems(doc: Document) -> list[ConfigProblem]:
    # Every client gets every tool's schema in each tool_list: its size is bounded first.
    size = len(json.dumps(doc.data["parameters"], separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PARAMETERS_BYTES:
        return [doc.problem(["parameters"], f"the schema is {format_bytes(size)} as JSON; a tool's parameters "
                            f"may be at most {format_bytes(MAX_PARAMETERS_BYTES)}")]
    return validate_parameters(doc, ["parameters"])


def check_tool_module(tool: Tool, doc: Document, root: Path) -> tuple[Located | None, list[ConfigProblem]]:
    """Where a ``python:`` tool's module is, and whether it defines the function.

    The module is looked for beside the tool's file first (``tools.d/greet.py``
    for ``greet:run``), then on the engine's ``sys.path``, by reading the
    filesystem only (see :mod:`.modules`): nothing is imported, so checking a
    configuration never runs tool code.  The module's source is parsed, not
    run, to find the function among its top-level definitions.
    """
    if not tool.python:
        return None, []
    module, function = tool.python.split(":")
    top = module.split(".")[0]
    here = (root / doc.file).parent
    located = locate(module, (str(here), *default_search()), installed=True)
    where = ["python"]
    if located is None:
        parent = locate(top, (str(here), *default_search()), installed=True) if top != module else None
        if parent is not None:
            return None, [doc.problem(where, f"no Python module named {module!r}: {parent.top} has no "
                                             f"{module.removeprefix(top + '.')!r}")]
        return None, [doc.problem(where, f"no Python module named {module!r}: put {top}.py (or a package "
                                         f"{top}/) beside this file, or install it")]
    beside = located.entry == str(here)
    shown = Path(located.top).relative_to(here).as_posix() if beside else located.top
    if beside:
        shown = f"{Path(doc.file).parent.as_posix()}/{shown}"
        if not within(Path(located.top), root, here):
            return None, [doc.problem(where, f"{shown} is a symbolic link outside the configuration directory: "
                                             "refused, not read")]
        if top in sys.stdlib_module_names:
            return None, [doc.problem(where, f"{shown} has the name of a standard-library module, which the "
                                             "sandbox would import instead: rename it")]
    if located.source is None:
        return located, []  # a namespace package or a compiled module: nothing to read, trust it
    if beside and not within(Path(located.source), root, here):
        return None, [doc.problem(where, f"the source of {module!r} is a symbolic link outside the configuration "
                                         "directory: refused, not read")]
    source = _read_source(located.source)
    if source is None and not beside:
        return located, []  # an installed module past the bound: as trusted as a compiled one
    if not isinstance(source, bytes):
        reason = source or f"larger than {format_bytes(MAX_MODULE_BYTES)}"
        return None, [doc.problem(where, f"module {module!r} cannot be read: {reason}")]
    names = _defined_names(source)
    if isinstance(names, str):
        return None, [doc.problem(where, f"module {module!r} is not valid Python: {names}")]
    if function not in names:
        return None, [doc.problem(where, f"module {module!r} has no function {function!r}")]
    return located, []


# Parsed modules, by the digest of their source: parsing is most of the time a load spends
# on python: tools, and each reload, check or start parses the same modules again.
_PARSED_MAX = 256
_parsed: dict[bytes, frozenset[str] | str] = {}
_parsed_lock = threading.Lock()  # load_config also runs in worker threads (reloads)


def _defined_names(source: bytes) -> frozenset[str] | str:
    """The module's top-level names, or why it is not Python (never quoting its text)."""
    digest = hashlib.blake2b(source, digest_size=32).digest()
    with _parsed_lock:
        known = _parsed.get(digest)
    if known is not None:
        return known
    outcome: frozenset[str] | str
    try:
        outcome = frozenset(_top_level_names(ast.parse(source)))
    except SyntaxError as exc:
        # The message only, never the offending text: the file may not be Python at all.
        outcome = f"{exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # NUL bytes
        outcome = str(exc)
    with _parsed_lock:
        if len(_parsed) >= _PARSED_MAX:
            del _parsed[next(iter(_parsed))]  # the oldest
        _parsed[digest] = outcome
    return outcome


def _read_source(path: str) -> bytes | str | None:
    """The file's bytes, None when it is past ``MAX_MODULE_BYTES``, or why it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc.strerror or "cannot open"
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        data = stream.read(MAX_MODULE_BYTES + 1)
    return None if len(data) > MAX_MODULE_BYTES else data


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


def command_problem(program: str, path: str) -> str | None:
    if "/" in program:
        if not os.access(program, os.X_OK) or not os.path.isfile(program):
            return f"{program!r} does not exist or is not executable"
        return None
    if shutil.which(program, path=path) is None:
        return f"{program!r} is not found on the tool's PATH ({path})"
    return None


def agent_may_call(agent: Agent, tool: str) -> bool:
    """Whether a rule of ``agent``'s model may name ``tool``: one of its tools, or ask_agent when it has delegates."""
    return tool in agent.tools or tool in agent.client_tools or (tool == ASK_AGENT and bool(agent.delegates)) \
        or (tool == READ_BOARD and agent.board != "none") or (tool == POST_TO_BOARD and agent.board == "post")


def check_agent_class(agent: Agent, doc: Document, root: Path) -> tuple[Any, list[ConfigProblem]]:
    """Import the class a ``python:`` agent names (engine/agents/loading.py): the class, or the problem.

    Unlike a ``python:`` tool's module, an agent's module is imported here: agent code
    runs in the engine itself, so a module that does not import is a configuration error.
    """
    from ..agents.loading import AgentLoadError, load_agent_class

    assert agent.python is not None
    try:
        return load_agent_class(agent.python, (root / doc.file).parent, root), []
    except AgentLoadError as exc:
        return None, [doc.problem(["python"], str(exc))]


def check_agent(agent: Agent, doc: Document) -> list[ConfigProblem]:
    """An inline model block's own mistakes (its provider's checks: every rule's, for rules)."""
    if agent.model is None or isinstance(agent.model, str):
        return []
    check = provider_of(agent.model).check
    return check(agent.model, doc, ["model"], agent) if check is not None else []


def check_model(model: NamedModel, doc: Document) -> list[ConfigProblem]:
    """A models.d/ file's own mistakes; whether its rules' tools are an agent's is checked per agent."""
    check = provider_of(model.model).check
    return check(model.model, doc, [], None) if check is not None else []


def rules_problems(
    model: RulesModel, doc: Document, prefix: list[PathSegment], agent: Agent | None
) -> list[ConfigProblem]:
    """The rules' patterns and templates; with ``agent``, also that each tool and host is the agent's."""
    problems: list[ConfigProblem] = []
    for index, rule in enumerate(model.rules):
        where: list[PathSegment] = [*prefix, "rules", index]
        groups: set[str] | None  # None: the pattern does not compile, so no placeholder can be judged
        try:
            groups = set(compile_linear(rule.match).groupindex)
        except RegexError as exc:
            problems.append(doc.problem([*where, "match"], f"not a valid regular expression: {exc}"))
            groups = None
        if agent is not None and rule.tool is not None and not agent_may_call(agent, rule.tool):
            problems.append(
                doc.problem([*where, "tool"], f"tool {rule.tool!r} is not in this agent's tools or client_tools")
            )
        if rule.resource is not None:
            host = "/".join(rule.resource.split("/")[:3])
            if agent is not None and host not in agent.resources:
                problems.append(
                    doc.problem([*where, "resource"], f"resource host {host!r} is not in this agent's resources")
                )
            for field in _placeholders(rule.resource):
                if groups is not None and field not in groups:
                    problems.append(
                        doc.problem([*where, "resource"], f"placeholder {{{field}}} is not a named group of match")
                    )
        for key, value in rule.arguments.items():
            for field in _placeholders(value):
                if groups is not None and field not in groups:
                    problems.append(
                        doc.problem(
                            [*where, "arguments", key],
                            f"placeholder {{{field}}} is not a named group of match",
                        )
                    )
        problems += _answer_problems(doc, [*where, "answer"], rule.answer, groups, rule.tool or rule.resource)
    return problems


def check_agent_models(
    agent: Agent, doc: Document, models: Mapping[str, NamedModel], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """Each model name the agent uses is declared in models.d/; a named rules model's tools are the agent's."""
    failed = failed or {}
    refs: list[tuple[list[PathSegment], str]] = [(["models", i], name) for i, name in enumerate(agent.models)]
    if isinstance(agent.model, str):
        refs.insert(0, (["model"], agent.model))
    problems = []
    for where, name in refs:
        named = models.get(name)
        if named is None:
            if name in failed:
                problems.append(doc.problem(where, f"model {name!r} did not load (see {failed[name]})"))
            else:
                problems.append(doc.problem(where, unknown_name("model", name, models)))
            continue
        check_use = provider_of(named.model).check_use
        if check_use is not None:
            problems += check_use(named, agent, doc, where)
    return problems


def rules_use_problems(
    named: NamedModel, agent: Agent, doc: Document, where: list[PathSegment]
) -> list[ConfigProblem]:
    """A named rules model's tools and resources must be the agent's (the rules provider's ``check_use``)."""
    assert isinstance(named.model, RulesModel)
    problems = []
    for rule in named.model.rules:
        if rule.tool is not None and not agent_may_call(agent, rule.tool):
            problems.append(doc.problem(where, f"model {named.name!r} ({named.source}) calls tool {rule.tool!r}, "
                                               "which is not in this agent's tools or client_tools"))
        if rule.resource is not None and (host := "/".join(rule.resource.split("/")[:3])) not in agent.resources:
            problems.append(doc.problem(where, f"model {named.name!r} ({named.source}) reads {host!r}, "
                                               "which is not in this agent's resources"))
    return problems


def _answer_problems(
    doc: Document, where: list[PathSegment], answer: str, groups: set[str] | None, acts: str | None
) -> list[ConfigProblem]:
    try:
        fields = template_fields(answer)
    except ValueError as exc:
        return [doc.problem(where, f"not a valid template: {exc}")]
    problems = []
    for field in fields:
        head = field.split(".")[0].split("[")[0]
        if head == "result" and acts is None:
            problems.append(doc.problem(where, "{result} is only available in a rule with a tool or a resource"))
        elif groups is not None and head not in groups and head != "result":
            problems.append(doc.problem(where, f"placeholder {{{field}}} is not a named group of match nor result"))
    return problems


def check_resource(resource: Resource, doc: Document, root: Path) -> list[ConfigProblem]:
    """The checks of the resource's own kind (each kind's module has them: engine/resources/)."""
    return list(kind_of(resource).check(resource, doc, root))


def check_policy(policy: Policy, doc: Document) -> list[ConfigProblem]:
    problems = []
    for index, rule in enumerate(policy.rules):
        for c_index, condition in enumerate(rule.conditions):
            base = condition.path_prefix
            if base is not None and (".." in base.split("/") or any(c == "\\" or ord(c) < 32 for c in base)):
                problems.append(doc.problem(["rules", index, "conditions", c_index, "path_prefix"],
                                            f"{base!r} must be a plain path (no '..', no backslash)"))
            if condition.matches is not None:
                # Matched against client arguments: RE2, linear in the text (engine/linear_re.py).
                try:
                    compile_linear(condition.matches)
                except RegexError as exc:
                    problems.append(doc.problem(["rules", index, "conditions", c_index, "matches"],
                                                f"not a valid regular expression: {exc}"))
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
            problems.append(
                doc.problem(["resources", index], f"resource host {name!r} did not load (see {failed[name]})")
            )
        else:
            problems.append(doc.problem(["resources", index], f"unknown resource host {name!r}{_known(resources)}"))
    return problems


def check_agent_learning(
    agent: Agent, doc: Document, tools: Mapping[str, Tool], resources: Mapping[str, Resource],
) -> list[ConfigProblem]:
    """``routing: feedback`` has models to choose among; memory has a host its reads are decided on;
    a memory tool belongs to an agent whose memory is on."""
    problems = []
    if agent.routing == "feedback" and len(agent.model_names) < 2:
        problems.append(doc.problem(["routing"], "routing: feedback chooses among several models: list at least "
                                                 "two names in 'models'"))
    hosts = [name for name in agent.resources if name.startswith("memory://") and name in resources]
    if agent.memory.enabled and not hosts:
        known = sorted(key for key in resources if key.startswith("memory://"))
        hint = f" (declared: {', '.join(known)})" if known else " (declare one in resources.d/: scheme: memory)"
        problems.append(doc.problem(["memory"], "memory is on, so the agent needs a memory host in its resources, "
                                                f"where its memory is read under policy{hint}"))
    for index, name in enumerate(agent.tools):
        tool = tools.get(name)
        if tool is not None and tool.builtin and not agent.memory.enabled:
            problems.append(doc.problem(["tools", index], f"tool {name!r} is the built-in {tool.builtin!r}, which "
                                                          "needs the agent's memory: set 'memory: on'"))
    return problems


def check_agent_delegates(
    agent: Agent, doc: Document, agents: Mapping[str, Agent], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """Each agent named in ``delegates`` is declared, and is not the agent itself."""
    failed = failed or {}
    problems = []
    for index, name in enumerate(agent.delegates):
        where: list[PathSegment] = ["delegates", index]
        if name == agent.name and agent.name:
            problems.append(doc.problem(where, "an agent cannot delegate to itself"))
        elif name in failed and name not in agents:
            problems.append(doc.problem(where, f"agent {name!r} did not load (see {failed[name]})"))
        elif name not in agents:
            problems.append(doc.problem(where, unknown_name("agent", name, agents)))
    return problems


def delegation_loops(agents: Mapping[str, Agent]) -> list[str]:
    """Warnings for agents whose ``delegates`` lead back to them (a loop is refused when it happens)."""
    found: list[str] = []
    seen: set[frozenset[str]] = set()

    def walk(path: list[str]) -> None:
        for name in agents[path[-1]].delegates:
            if name == path[0]:
                loop = frozenset(path)
                if loop not in seen:
                    seen.add(loop)
                    found.append(f"{agents[path[0]].source}: delegates form a loop ({' -> '.join([*path, name])}): "
                                 "an agent asking one already in its chain is refused when it happens")
            elif name in agents and name not in path and len(path) < 8:
                walk([*path, name])

    for name in sorted(agents):
        walk([name])
    return found


def check_policy_agents(
    policy: Policy, doc: Document, agents: Mapping[str, Agent], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    """A rule's ``targets.agents``: each name is a declared agent, each glob matches one."""
    failed = failed or {}
    problems = []
    for index, rule in enumerate(policy.rules):
        for a_index, pattern in enumerate(rule.targets.agents):
            where: list[PathSegment] = ["rules", index, "targets", "agents", a_index]
            if any(char in pattern for char in GLOB_CHARS):
                if not any(glob_matches(pattern, name) for name in agents):
                    problems.append(doc.problem(where, f"the pattern {pattern!r} matches no agent"))
            elif pattern in failed and pattern not in agents:
                problems.append(doc.problem(where, f"agent {pattern!r} did not load (see {failed[pattern]})"))
            elif pattern not in agents:
                problems.append(doc.problem(where, unknown_name("agent", pattern, agents)))
    return problems


def check_policy_references(
    policy: Policy, doc: Document, tools: Mapping[str, Tool], roles: set[str], failed: Mapping[str, str] | None = None,
) -> list[ConfigProblem]:
    failed = failed or {}
    problems = []
    for index, rule in enumerate(policy.rules):
        where: list[PathSegment] = ["rules", index]
        for r_index, role in enumerate(rule.subjects.roles):
            if role not in roles:
                problems.append(
                    doc.problem([*where, "subjects", "roles", r_index], f"unknown role {role!r}{_known(roles)}")
                )
        for t_index, pattern in enumerate(rule.targets.tools):
            is_glob = any(char in pattern for char in GLOB_CHARS)
            if pattern in failed and pattern not in tools:
                problems.append(
                    doc.problem(
                        [*where, "targets", "tools", t_index], f"tool {pattern!r} did not load (see {failed[pattern]})"
                    )
                )
            elif not is_glob and pattern not in tools:
                problems.append(
                    doc.problem([*where, "targets", "tools", t_index], f"unknown tool {pattern!r}{_known(tools)}")
                )
            elif is_glob and not any(glob_matches(pattern, name) for name in tools):
                problems.append(
                    doc.problem([*where, "targets", "tools", t_index], f"the pattern {pattern!r} matches no tool")
                )
    return problems


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return f" (known: {', '.join(listed)})" if listed else " (none are declared)"
