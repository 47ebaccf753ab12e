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

from .tool_kinds import kind_of
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
    # False: none; True: the host's network as it is; a tuple: only these destinations,
    # through the engine's egress proxy (entries as written: strings or mappings, parsed
    # by engine.netproxy.Allowlist, checked by the loader)
    network: bool | tuple[Any, ...] = False
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
class ChainStep:
    """One step of a chain tool: another tool, with arguments templated from the chain's.

    String values of ``arguments`` may hold ``{args.NAME}`` (the chain's own
    arguments) and ``{steps.REF.result...}`` / ``{steps.REF.status}`` (an
    earlier step's output or status; REF is its index from 0 or its ``id``).  A
    value that is exactly one placeholder keeps the JSON type of what it names.
    """

    tool: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda v: MappingProxyType(dict(v)))
    id: str | None = None

    def label(self, index: int) -> str:
        return f"{index} ({self.id}: {self.tool})" if self.id else f"{index} ({self.tool})"


@attrs.frozen
class Tool:
    """A callable tool: its contract with the model, its risk level, and how it runs."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    permission_level: Level
    command: tuple[str, ...] = ()
    python: str | None = None
    # Instead of a program: steps, each a full action of its own (engine/toolkinds/chain.py).
    chain: tuple[ChainStep, ...] = ()
    secret_arguments: tuple[str, ...] = ()
    # ``content``: stdout is MCP content blocks (engine/protocol/content.py), not plain JSON.
    output: Literal["json", "content"] = "json"
    sandbox: SandboxNeeds = SandboxNeeds()
    source: Source = Source()
    # Host path of the top-level package directory or module file ``python`` lives
    # in, found by the loader without importing it; bound read-only into the
    # sandbox.  Empty for a command tool, or for a Tool built in code (then it is
    # looked for on sys.path at call time).  Filled in by the loader, never by YAML.
    python_package: str = ""
    # Set for a tool exposed from an ``mcp_server`` file (never written in YAML).
    upstream: UpstreamRef | None = None
    # A tool the engine itself carries out (``remember``, ``forget``: engine/toolkinds/builtin.py);
    # its parameters are the built-in's (engine/toolkinds/builtin.py), never written in YAML.
    builtin: Literal["remember", "forget"] | None = None
    # The registered kind (engine/config/tool_kinds.py) it is of: the key its file declares it with.
    # A built-in kind's settings are the fields above; the loader sets it, and a Tool built in
    # code gets it from which of them is set.
    kind: str = attrs.field(default=attrs.Factory(lambda tool: tool._builtin_kind(), takes_self=True))
    # The settings of a kind registered from elsewhere (its options_class); None for the built-in ones.
    options: Any = None

    def _builtin_kind(self) -> str:
        if self.upstream is not None:
            return "mcp_server"
        if self.chain:
            return "chain"
        if self.builtin:
            return "builtin"
        return "python" if self.python else "command"

    @property
    def runs(self) -> str:
        """How the tool runs, in one line (its kind's words): the module function, the argv, the chain, ..."""
        return kind_of(self).describe(self)


# --- MCP servers as tools -------------------------------------------------------------

Lifecycle = Literal["single_use", "shared", "per_call"]


def definition_digest(description: str, parameters: Mapping[str, Any]) -> str:
    """The pin of an upstream tool: SHA-256 of its description and input schema."""
    from ..canonical import digest

    return "sha256:" + digest({"description": description, "inputSchema": dict(parameters)})


@attrs.frozen
class PinnedDefinition:
    """What ``sconnect mcp pin`` saw the server offer, as reviewed: checked at every start."""

    digest: str
    description: str
    parameters: Mapping[str, Any] = attrs.field(converter=lambda v: MappingProxyType(dict(v)))


@attrs.frozen
class UpstreamTool:
    """One allowlisted tool of an MCP server (``mcp_server.tools.<upstream name>``)."""

    permission_level: Level
    # The exposed name (YAML key ``as``); default ``<file name>_<upstream name>``.
    as_: str | None = None
    # What agents are shown; default the pinned upstream description.
    description: str | None = None
    pinned: PinnedDefinition | None = None


@attrs.frozen
class McpServer:
    """How to run an MCP server over stdio, and which of its tools are exposed."""

    command: tuple[str, ...]
    tools: Mapping[str, UpstreamTool] = attrs.field(converter=lambda v: MappingProxyType(dict(v)))
    lifecycle: Lifecycle = "per_call"
    startup_timeout: Seconds = Seconds(10)
    # single_use: sandboxes kept started ahead of calls.
    pool_size: int = 2
    # The first pause before starting again a server that failed to start or stopped soon
    # after starting; it doubles with each such failure in a row, up to 30 s.
    restart_backoff: Seconds = Seconds(0.5)


@attrs.frozen
class UpstreamRef:
    """Where an exposed tool's calls go: the server of file ``file`` and its tool ``tool``."""

    name: str  # the exposed tool's name
    file: str
    server: McpServer
    tool: str
    sandbox: SandboxNeeds
    # The pinned definition the upstream tool must still match at every start.
    pinned: PinnedDefinition


@attrs.frozen
class McpServerFile:
    """A ``tools.d`` file declaring ``mcp_server``: it exposes one Tool per allowed, pinned tool."""

    name: str
    description: str
    mcp_server: McpServer
    sandbox: SandboxNeeds = SandboxNeeds()
    source: Source = Source()

    def exposed_name(self, upstream: str) -> str:
        entry = self.mcp_server.tools[upstream]
        return entry.as_ or f"{self.name}_{upstream}"

    def tools(self) -> tuple[Tool, ...]:
        """The exposed Tools (pinned ones only: an unpinned tool is a config error)."""
        exposed = []
        for upstream, entry in self.mcp_server.tools.items():
            if entry.pinned is None:
                continue
            exposed.append(
                Tool(
                    name=self.exposed_name(upstream),
                    description=entry.description or entry.pinned.description,
                    parameters=dict(entry.pinned.parameters),
                    permission_level=entry.permission_level,
                    sandbox=self.sandbox,
                    source=self.source,
                    upstream=UpstreamRef(
                        name=self.exposed_name(upstream), file=self.source.file, server=self.mcp_server, tool=upstream,
                        sandbox=self.sandbox, pinned=entry.pinned,
                    ),
                )
            )
        return tuple(exposed)


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
    """An OpenAI-compatible chat-completions endpoint (the production seam).

    ``retries`` more attempts are made after a connection error, a connect
    timeout, or an HTTP 408/429/5xx, but only before anything of the answer
    has been passed on; each waits ``retry_backoff * 2**n`` (with jitter), or
    what ``Retry-After`` asks, never more than ``retry_max_wait``.
    """

    provider: Literal["openai"]
    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    # The longest wait for the next data of an answer (not for the whole answer).
    timeout: Seconds = Seconds(60)
    connect_timeout: Seconds = Seconds(10)
    # The former name of ``timeout``, still accepted; when set it wins.
    request_timeout: Seconds | None = None
    retries: int = 2
    retry_backoff: Seconds = Seconds(0.5)
    retry_max_wait: Seconds = Seconds(30)
    stream: bool = True

    @property
    def read_timeout_s(self) -> float:
        return float(self.request_timeout if self.request_timeout is not None else self.timeout)


class ModelConfig(Protocol):
    """A model block's settings: an instance of one registered provider's config class
    (engine/config/model_providers.py), e.g. :class:`RulesModel` or :class:`OpenAIModel`."""

    @property
    def provider(self) -> str: ...


# An agent's ``model:``: an inline block, the name of a models.d/ file, or nothing (``models:`` instead).
AgentModel = ModelConfig | str | None


@attrs.frozen
class NamedModel:
    """A model endpoint declared once in ``models.d/`` and named by agents (``model: fast``)."""

    name: str
    description: str
    model: ModelConfig
    source: Source = Source()


# The built-in tool through which a model asks another agent (``delegates:``; engine/server/delegation.py).
ASK_AGENT = "ask_agent"
# The built-in tools through which a model reads and posts to its session's board (``board:``; engine/server/board.py).
READ_BOARD = "read_board"
POST_TO_BOARD = "post_to_board"
# Names the engine offers models itself (read_resource: engine/models/base.py): no tools.d/ tool may take them.
BUILTIN_TOOLS = ("read_resource", ASK_AGENT, READ_BOARD, POST_TO_BOARD)


@attrs.frozen
class AgentMemory:
    """An agent's ``memory:``: what it keeps about each subject across sessions.

    Written ``memory: on`` (these defaults) or as a mapping of these keys.
    """

    enabled: bool = False
    # Memories one subject may hold with this agent; a write past it is refused.
    max_items: int = 100
    # The longest memory, in bytes of UTF-8.
    max_item_size: Bytes = Bytes(1024)
    # Memories older than this are forgotten; None: kept until the subject deletes them.
    retention: Seconds | None = None
    # The most recent memories given to the model with each turn.
    recall: int = 20


@attrs.frozen
class FeedbackRouting:
    """How ``routing: feedback`` explores: Thompson sampling over decayed ratings."""

    # At least this share of turns goes to a model drawn uniformly, whatever the ratings say.
    exploration: float = 0.1
    # A rating counts half as much after this long (old ratings fade).
    half_life: Seconds = Seconds(30 * 86400)
    # A fixed seed makes the choices repeatable (tests, demos); None: unpredictable.
    seed: int | None = None


@attrs.frozen
class Agent:
    """A declared agent: its model, the tools and resource hosts it may use, its limits."""

    name: str
    description: str
    # Exactly one of ``model`` (inline block or a models.d/ name) and ``models`` (names, tried per ``routing``).
    model: AgentModel = None
    models: tuple[str, ...] = ()
    routing: Literal["first", "feedback"] = "first"
    tools: tuple[str, ...] = ()
    client_tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    system_prompt: str = ""
    max_steps: int = 8
    approval_timeout: Seconds = Seconds(120)
    # A custom agent in Python instead of a model: ``module:Class`` (engine/agents/).
    python: str | None = None
    # Longest a turn of a Python agent, or a delegated turn of any agent, may take (approvals included).
    turn_timeout: Seconds = Seconds(600)
    # Agents this one may ask (``agent.delegate``), and the level of asking *this* agent.
    delegates: tuple[str, ...] = ()
    delegation_level: Level = 1
    # The session board (engine/server/board.py): none, read, or post (read and post).
    board: Literal["none", "read", "post"] = "none"
    source: Source = Source()
    memory: AgentMemory = AgentMemory()
    feedback_routing: FeedbackRouting = FeedbackRouting()
    # Well-rated earlier turns given to the model as examples (0: none), from the same
    # subject's turns only unless ``examples_scope: agent`` (every subject's, with this agent).
    examples_from_feedback: int = 0
    examples_scope: Literal["subject", "agent"] = "subject"
    # The class ``python`` names, imported by the loader (never written in YAML); None for a model agent.
    python_class: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models.d/ names this agent uses, in routing order (none for an inline block)."""
        return (self.model,) if isinstance(self.model, str) else self.models

    @property
    def model_summary(self) -> str:
        """One word or line for listings: the inline block's provider, else the names."""
        if self.python is not None:
            return f"python {self.python}"
        if self.model is not None and not isinstance(self.model, str):
            return self.model.provider
        names = self.model_names
        return names[0] if len(names) == 1 else f"{', '.join(names)} ({self.routing})"


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
    # Agents asked by ``agent.delegate`` (names or globs).
    agents: tuple[str, ...] = ()


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
class Remember:
    """How long an approval this rule asks for may be remembered as a grant (engine/grants).

    ``remember: never`` (``never``), or ``remember: {max: 8h}`` (``max``, in seconds).
    A rule without ``remember`` leaves the default: up to 8h for a user's approval, 1h
    for an admin's, never for level 3.
    """

    never: bool = False
    max: Seconds | None = None


@attrs.frozen
class PolicyRule:
    id: str
    effect: Literal["allow", "deny", "require_approval"]
    subjects: Subjects
    actions: tuple[Literal["tool.call", "resource.read", "agent.delegate", "board.append"], ...] = ("tool.call",)
    targets: Targets = Targets()
    conditions: tuple[Condition, ...] = ()
    approver: Literal["user", "admin"] | None = None
    # Only with require_approval: the requester may give the admin approval themselves.
    self_approval: bool = False
    # How long a person's approval under this rule may be remembered (None: the default).
    remember: Remember | None = None
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
    models: Mapping[str, NamedModel] = attrs.field(
        factory=dict, converter=lambda v: MappingProxyType(dict(v))
    )
    # sha256 over the policy files' bytes, hashed by the loader (engine/policy/_revision.py).
    policy_revision: str = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role for policy in self.policies for role in policy.roles)

    def resource_key(self, resource: Resource) -> str:
        return f"{resource.scheme}://{resource.name}"
