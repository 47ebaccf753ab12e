"""The server's settings: where it listens, where its state lives, its limits."""

from __future__ import annotations

from pathlib import Path

import attrs

from ..auth import AuthSettings

DATABASE_NAME = "sconnect.db"


@attrs.frozen
class ServerSettings:
    # Absolute, so that paths handed to the sandbox mean the same thing everywhere.
    config_dir: Path = attrs.field(converter=lambda p: Path(p).resolve())
    state_dir: Path = attrs.field(converter=lambda p: Path(p).resolve())
    auth: AuthSettings
    host: str = "127.0.0.1"
    port: int = 8765
    # The WebSocket endpoint; clients use the URL the server prints, path included.
    path: str = "/ws"
    # A client that never finishes its handshake must not hold a descriptor for long.
    handshake_timeout_s: float = 5.0
    max_frame_bytes: int = 2**20
    # Frames queued for one client; a client that stops reading is cut off past it.
    send_queue_frames: int = 256
    send_timeout_s: float = 10.0
    # Hot reload: how often the config directories are polled, and the signals that force a reload.
    reload_interval_s: float = 1.0
    reload_signals: tuple[int, ...] = ()
    # The /healthz, /readyz and /metrics listener; None: none (0 picks a free port).
    health_port: int | None = None
    # On a graceful stop, how long running turns and calls may go on before they are cancelled.
    shutdown_grace_s: float = 10.0
    # How long a direct tool_call outside a session waits for its approval.
    approval_timeout_s: float = 120.0

    @property
    def workspace(self) -> Path:
        return self.state_dir / "workspace"

    @property
    def work_root(self) -> Path:
        return self.state_dir / "work"

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME
