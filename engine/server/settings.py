"""The server's settings: where it listens, where its state lives, its limits."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import attrs

from ..auth import AuthSettings
from ..netproxy import ProxyConfig

DATABASE_NAME = "sconnect.db"


def check_port(value: object) -> int:
    """``value`` as a TCP port (0 picks a free one); ValueError naming the range otherwise."""
    if type(value) is not int or not 0 <= value <= 65535:
        raise ValueError(f"{value!r} is not a port number (0-65535; 0 picks a free port)")
    return value


def _port(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        check_port(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def _database_url(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))):
        raise ValueError(f"{attribute.name}: a PostgreSQL URL starts with postgresql://")


@attrs.frozen
class ServerSettings:
    # Absolute, so that paths handed to the sandbox mean the same thing everywhere.
    config_dir: Path = attrs.field(converter=lambda p: Path(p).resolve())
    state_dir: Path = attrs.field(converter=lambda p: Path(p).resolve())
    auth: AuthSettings
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8765, validator=_port)
    # The WebSocket endpoint; clients use the URL the server prints, path included.
    path: str = "/ws"
    # A client that never finishes its handshake must not hold a descriptor for long.
    handshake_timeout_s: float = 5.0
    max_frame_bytes: int = 2**20
    # Connections at once, overall and per subject (sub); past them the handshake gets 503 / 429.
    # The overall cap is lowered at start to what the descriptor budget allows (see fdbudget).
    max_connections: int = 10_000
    max_connections_per_subject: int = 64
    # TCP connections still in their handshake, overall and per peer address; past them a new
    # one is closed at once.  None: derived from RLIMIT_NOFILE at start (see fdbudget).
    max_handshakes: int | None = None
    max_handshakes_per_peer: int | None = None
    # Frames a connection may send: a token bucket of `frame_burst`, refilled at `frames_per_second`
    # and by one token for each request answered, so a client that waits for its answers never
    # runs dry.  An empty bucket drops frames with one `rate_limited` notice; a client still
    # flooding after `flood_close_s` is closed (1008).
    frames_per_second: float = 50.0
    frame_burst: int = 100
    flood_close_s: float = 2.0
    # Per subject: sessions live at once (attached to a connection), actions waiting for approval.
    max_sessions_per_subject: int = 32
    max_pending_approvals_per_subject: int = 16
    # What a model may be given in one user_message (UTF-8 bytes); larger ones are `too_large`.
    max_user_message_bytes: int = 64 * 1024
    # Tools a client may offer in one tool_list, and the size of each one's parameters schema.
    max_offered_tools: int = 64
    max_offered_schema_bytes: int = 64 * 1024
    # Stored sessions and finished approvals untouched this long are deleted; the sweep
    # (which also expires overdue approvals) runs every `maintenance_interval_s`.
    retention_s: float = 30 * 86400.0
    maintenance_interval_s: float = 60.0
    # Sandboxed tool runs at once, overall and per session (or per connection for direct calls);
    # a call past them waits for a slot.
    max_tool_runs: int = 32
    # The egress proxy of tools whose sandbox.network is a list (limits, resolver; tests map
    # names with a HostsResolver here).
    egress: ProxyConfig = ProxyConfig()
    max_tool_runs_per_session: int = 4
    # A client that neither sends frames nor answers pings for this long is disconnected.
    idle_timeout_s: float = 600.0
    # Keepalive: a ping this often; no pong within `ping_timeout_s` closes the connection.
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 10.0
    # TLS (wss://): a certificate chain and its key, both PEM files.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Frames queued for one client; a client that stops reading is cut off past it.
    send_queue_frames: int = 256
    send_timeout_s: float = 10.0
    # Hot reload: how often the config directories are polled, and the signals that force a reload.
    reload_interval_s: float = 1.0
    reload_signals: tuple[int, ...] = ()
    # The /healthz, /readyz and /metrics listener; None: none (0 picks a free port).
    health_port: int | None = attrs.field(default=None, validator=attrs.validators.optional(_port))
    # Loopback by default: /metrics is unauthenticated and says a lot about the service.
    health_host: str = "127.0.0.1"
    # On a graceful stop, how long running turns and calls may go on before they are cancelled.
    shutdown_grace_s: float = 10.0
    # How long a direct tool_call outside a session waits for its approval.
    approval_timeout_s: float = 120.0
    # Sessions, approvals and state in PostgreSQL, shared by every instance that names the same
    # database (engine.store); None: SQLite in state_dir. Never in a repr: it may hold a password.
    database_url: str | None = attrs.field(default=None, validator=_database_url, repr=False)
    # MCP over Streamable HTTP on the same host (path /mcp); None: off (0 picks a free port).
    mcp_port: int | None = None
    # Callers without a token get this role (loopback listeners only; None: a token is required).
    mcp_anonymous_role: str | None = None
    # The browser console (engine.console) on its own listener; None: off (0 picks a free port).
    # Loopback by default like the health listener; TLS when the server has a certificate.
    console_port: int | None = attrs.field(default=None, validator=attrs.validators.optional(_port))
    console_host: str = "127.0.0.1"
    # How long an MCP tools/call is held open waiting (for an approval) before "call again".
    mcp_approval_wait_s: float = 50.0
    # With a database_url: how often this instance renews its presence (what it serves, its
    # live counts per subject); past three missed beats the others count it as gone.
    instance_heartbeat_s: float = 2.0

    # Cached: read on every tool call, and one Path (its text cached too) is cheaper than a new one each time.
    @functools.cached_property
    def workspace(self) -> Path:
        return self.state_dir / "workspace"

    @functools.cached_property
    def work_root(self) -> Path:
        return self.state_dir / "work"

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME
