"""Server settings from three layers: ``sconnect.yaml``, ``SCONNECT_*`` variables, flags.

Later layers win.  The file is validated against its shipped JSON Schema and its
errors are located (file:line) like the rest of the configuration; environment
variables and ``--limit KEY=VALUE`` flags use the same names and units
(``SCONNECT_LIMITS_IDLE_TIMEOUT=5m``, ``--limit idle_timeout=5m``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..config.units import parse_duration, parse_size
from ..config.yamldoc import read_document
from ..errors import ConfigError, UsageError


# sconnect.yaml limit -> (ServerSettings field, parser).
def _positive(parse: Any, minimum: float, unit: str) -> Any:
    def parsed(value: Any) -> Any:
        result = parse(value)
        if result < minimum:
            raise ValueError(f"{value!r} is too small: at least {minimum:g}{unit}")
        return result

    return parsed


_seconds = _positive(lambda v: float(parse_duration(v)), 0.001, "s")
_bytes = _positive(lambda v: int(parse_size(v)), 1, " bytes")
_count = _positive(int, 1, "")

LIMITS: dict[str, tuple[str, Any]] = {
    "max_frame": ("max_frame_bytes", _positive(lambda v: int(parse_size(v)), 1024, " bytes")),
    "connections": ("max_connections", _count),
    "connections_per_subject": ("max_connections_per_subject", _count),
    "handshakes": ("max_handshakes", _count),
    "handshakes_per_peer": ("max_handshakes_per_peer", _count),
    "sessions_per_subject": ("max_sessions_per_subject", _count),
    "pending_approvals_per_subject": ("max_pending_approvals_per_subject", _count),
    "user_message": ("max_user_message_bytes", _bytes),
    "offered_tools": ("max_offered_tools", _count),
    "offered_schema": ("max_offered_schema_bytes", _bytes),
    "retention": ("retention_s", _seconds),
    "frames_per_second": ("frames_per_second", _positive(float, 0.001, "")),
    "frame_burst": ("frame_burst", _count),
    "tool_runs": ("max_tool_runs", _count),
    "tool_runs_per_session": ("max_tool_runs_per_session", _count),
    "handshake_timeout": ("handshake_timeout_s", _seconds),
    "idle_timeout": ("idle_timeout_s", _seconds),
    "ping_interval": ("ping_interval_s", _seconds),
    "ping_timeout": ("ping_timeout_s", _seconds),
    "send_queue": ("send_queue_frames", _count),
    "send_timeout": ("send_timeout_s", _seconds),
    "approval_timeout": ("approval_timeout_s", _seconds),
    "mcp_approval_wait": ("mcp_approval_wait_s", _seconds),
    # Every beat is a write to the shared database: a floor keeps a typo from hammering it.
    "instance_heartbeat": ("instance_heartbeat_s", _positive(lambda v: float(parse_duration(v)), 0.1, "s")),
}


def _schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("schemas", "sconnect.json").read_text("utf-8"))


def read_server_file(path: Path) -> dict[str, Any]:
    """The file's settings as ServerSettings keyword arguments (limits converted); ConfigError if invalid."""
    doc = read_document(path, str(path))
    if isinstance(doc, list):
        raise ConfigError(doc)
    data = doc.data if doc.data is not None else {}
    problems = [
        doc.problem(list(error.absolute_path), error.message)
        for error in jsonschema.Draft202012Validator(_schema()).iter_errors(data)
    ]
    if problems:
        raise ConfigError(problems)
    settings: dict[str, Any] = {}
    for key in ("host", "port", "health_port", "health_host", "state_dir", "insecure_public", "mcp_port",
                "console_port", "console_host", "database_url"):
        if key in data:
            settings[key] = data[key]
    problems = []
    if "shutdown_grace" in data:
        try:
            _seconds(data["shutdown_grace"])
            settings["shutdown_grace"] = data["shutdown_grace"]
        except ValueError as exc:
            problems.append(doc.problem(["shutdown_grace"], str(exc)))
    if "tls" in data:
        # Relative to the file that names them, not to wherever the server was started.
        settings["tls_cert"], settings["tls_key"] = (str(path.parent / data["tls"][k]) for k in ("cert", "key"))
    for name, value in data.get("limits", {}).items():
        field, parse = LIMITS[name]
        try:
            settings[field] = parse(value)
        except ValueError as exc:
            problems.append(doc.problem(["limits", name], str(exc)))
    if problems:
        raise ConfigError(problems)
    return settings


def limits_from(pairs: Mapping[str, str], source: str, *, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse ``name -> text`` limit overrides (from the environment or --limit flags).

    ``names`` gives what the user wrote for a limit (an environment variable's name),
    so that an error names it; otherwise ``source`` and the limit's name do."""
    settings: dict[str, Any] = {}
    for name, text in pairs.items():
        if name not in LIMITS:
            known = ", ".join(sorted(LIMITS))
            raise UsageError(f"{names[name] if names else source}: unknown limit {name!r} (known: {known})")
        field, parse = LIMITS[name]
        try:
            settings[field] = parse(text)
        except ValueError as exc:
            raise UsageError(f"{names[name] if names else f'{source} {name}'}: {exc}") from None
    return settings


def limits_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    prefix = "SCONNECT_LIMITS_"
    keys = {key[len(prefix):].lower(): key for key in environ if key.startswith(prefix)}
    return limits_from({name: environ[key] for name, key in keys.items()}, "environment", names=keys)


def limits_from_flags(flags: list[str]) -> dict[str, Any]:
    pairs = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep:
            raise UsageError(f"--limit {flag!r}: write NAME=VALUE, e.g. --limit idle_timeout=5m")
        pairs[name.strip()] = value.strip()
    return limits_from(pairs, "--limit")
