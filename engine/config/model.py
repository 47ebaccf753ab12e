"""The configuration as data: frozen attrs classes for every kind of YAML file.

Field names are the YAML keys, so that a structuring error's path is the path a
user sees in their file.  Defaults lean safe (no network, no workspace, short
timeouts) and are documented once, in the JSON Schemas under ``schemas/`` and
the README's config reference.  ``source`` is filled in by the loader, never
by YAML (the schemas forbid it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

import attrs

from .units import Bytes, Seconds

Level = Literal[0, 1, 2, 3]
LEVEL_NAMES: Mapping[int, str] = MappingProxyType(
    {0: "no approval", 1: "user approval", 2: "admin approval", 3: "system restricted"}
)


@attrs.frozen(order=True)
class Source:
    """Where a declaration came from: a path relative to the config root and a 1-based line."""

    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


# --- tools ------------------------------------------------------------------


@attrs.frozen
class SandboxNeeds:
    """What a tool needs from its sandbox; every default is the safe choice."""

    isolation: Literal["namespaces", "process", "pool"] = "namespaces"
    timeout: Seconds = Seconds(10)
    cpu_time: Seconds = Seconds(5)
    memory: Bytes = Bytes(512 * 2**20)
    max_output: Bytes = Bytes(2**20)
    network: bool = False
    workspace: Literal["none", "read", "write"] = "none"
    # whose workspace: the calling subject's own (default) or one area shared by everyone
    workspace_scope: Literal["subject", "shared"] = "subject"
    # bytes the workspace (the subject's, or the shared one) may hold; see engine/toolrun.py
    workspace_quota: Bytes = Bytes(64 * 2**20)
    writable_paths: tuple[str, ...] = ()
    readable_paths: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, converter=lambda v: MappingProxyType(dict(v)))
    env_allow: tuple[str, ...] = ()


@attrs.frozen
class Tool:
    """A callable tool: its contract with the model, its risk level, and how it runs."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    permission_level: Level
    command: tuple[str, ...] = ()
    python: str | None = None
    secret_arguments: tuple[str, ...] = ()
    sandbox: SandboxNeeds = SandboxNeeds()
    source: Source = Source()
    # Host path of the top-level package directory or module file ``python`` lives
    # in, found by the loader without importing it; bound read-only into the
    # sandbox.  Empty for a command tool, or for a Tool built in code (then it is
    # looked for on sys.path at call time).  Filled in by the loader, never by YAML.
    python_package: str = ""

    @property
    def runs(self) -> str:
        """How the tool runs, in one line: the module function or the argv."""
        return f"python {self.python}" if self.python else " ".join(self.command)


# --- agents -----------------------------------------------------------------


@attrs.frozen
class Rule:
    """One rule of the built-in ``rules`` model: a pattern over the user's message.

    ``match`` is a regular expression searched in the message; its named groups
    fill ``{name}`` placeholders in ``arguments`` and ``answer``.  With a
    ``tool``, the tool is called and ``{result.field}`` placeholders in
    ``answer`` read its output; with a ``resource`` (a URI template), the
    resource is read and ``{result.content}`` is its content; with neither,
    ``answer`` is the reply.
    """

    match: str
    answer: str
    tool: str | None = None
    resource: str | None = None
    arguments: Mapping[str, Any] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )


@attrs.frozen
class RulesModel:
    """The embedded, deterministic model: first matching rule wins, else ``fallback``."""

    provider: Literal["rules"]
    rules: tuple[Rule, ...] = ()
    fallback: str = "I did not understand that."


@attrs.frozen
class OpenAIModel:
    """An OpenAI-compatible chat-completions endpoint (the production seam)."""

    provider: Literal["openai"]
    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    request_timeout: Seconds = Seconds(60)


ModelConfig = RulesModel | OpenAIModel


@attrs.frozen
class Agent:
    """A declared agent: its model, the tools and resource hosts it may use, its limits."""

    name: str
    description: str
    model: ModelConfig
    tools: tuple[str, ...] = ()
    client_tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    system_prompt: str = ""
    max_steps: int = 8
    approval_timeout: Seconds = Seconds(120)
    source: Source = Source()


# --- resources --------------------------------------------------------------


@attrs.frozen
class FileResource:
    """``file://NAME/path``: files under ``root`` (relative to the config directory)."""

    scheme: Literal["file"]
    name: str
    description: str
    root: str
    globs: tuple[str, ...] = ("**",)
    max_size: Bytes = Bytes(2**20)
    on_oversize: Literal["truncate", "refuse"] = "truncate"
    source: Source = Source()


@attrs.frozen
class DbQuery:
    """A named, parameterised SELECT served at ``db://NAME/<path>``."""

    path: str
    sql: str
    description: str = ""
    params: Mapping[str, Literal["string", "integer", "number"]] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )


@attrs.frozen
class DbResource:
    """``db://NAME/path``: read-only SQLite queries mapped from path templates."""

    scheme: Literal["db"]
    name: str
    description: str
    database: str
    queries: tuple[DbQuery, ...]
    seed: str | None = None
    max_rows: int = 100
    source: Source = Source()


@attrs.frozen
class ApiRoute:
    """A GET path template served at ``api://NAME/<path>``."""

    path: str
    target: str
    description: str = ""
    params: Mapping[str, Literal["string", "integer", "number"]] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )


@attrs.frozen
class ApiResource:
    """``api://NAME/path``: GETs against an allowlisted base URL."""

    scheme: Literal["api"]
    name: str
    description: str
    base_url: str
    routes: tuple[ApiRoute, ...]
    allowed_hosts: tuple[str, ...] = ()
    headers_from_env: Mapping[str, str] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )
    timeout: Seconds = Seconds(10)
    max_size: Bytes = Bytes(2**20)
    on_oversize: Literal["truncate", "refuse"] = "truncate"
    cache: Seconds = Seconds(0)
    # The cache's bounds: past either, the least recently used answers go.
    cache_entries: int = 256
    cache_size: Bytes = Bytes(16 * 2**20)
    source: Source = Source()


class Resource(Protocol):
    """What every resource host's config has; each kind's frozen attrs class adds its own keys.

    The kinds (these three, and those in their own modules, such as
    ``engine/resources/static.py``) are registered in ``resource_kinds``.
    """

    @property
    def scheme(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def source(self) -> Source: ...


# --- policies ---------------------------------------------------------------


@attrs.frozen
class Role:
    description: str = ""


@attrs.frozen
class Subjects:
    """Who a rule applies to: any of these roles, or any of these ``sub`` values."""

    roles: tuple[str, ...] = ()
    subs: tuple[str, ...] = ()


@attrs.frozen
class Targets:
    """What a rule applies to; an empty list means "any"."""

    tools: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    resources: tuple[str, ...] = ()


@attrs.frozen
class Condition:
    """A declarative test on one argument of the call (no code in YAML)."""

    argument: str
    equals: Any = None
    one_of: tuple[Any, ...] | None = None
    prefix: str | None = None
    # The argument is a path at or under this one, compared after normalisation (see engine/policy/_match.py).
    path_prefix: str | None = None
    matches: str | None = None
    max: float | None = None


@attrs.frozen
class PolicyRule:
    id: str
    effect: Literal["allow", "deny", "require_approval"]
    subjects: Subjects
    actions: tuple[Literal["tool.call", "resource.read"], ...] = ("tool.call",)
    targets: Targets = Targets()
    conditions: tuple[Condition, ...] = ()
    approver: Literal["user", "admin"] | None = None
    # Only with require_approval: the requester may give the admin approval themselves.
    self_approval: bool = False
    description: str = ""
    source: Source = Source()


@attrs.frozen
class Policy:
    """One policy file: the roles it declares and its rules, in file order."""

    name: str
    description: str
    roles: Mapping[str, Role] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )
    rules: tuple[PolicyRule, ...] = ()
    source: Source = Source()


# --- the whole ----------------------------------------------------------------


@attrs.frozen
class Config:
    """Everything loaded from one configuration directory, checked across files."""

    root: str
    agents: Mapping[str, Agent]
    tools: Mapping[str, Tool]
    resources: Mapping[str, Resource]
    policies: tuple[Policy, ...]
    warnings: tuple[str, ...] = ()
    # sha256 over the policy files' bytes, hashed by the loader (engine/policy/_revision.py).
    policy_revision: str = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role for policy in self.policies for role in policy.roles)

    def resource_key(self, resource: Resource) -> str:
        return f"{resource.scheme}://{resource.name}"
