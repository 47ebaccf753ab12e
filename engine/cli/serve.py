"""``sconnect serve``: run the WebSocket server on a configuration until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_config, resolve_config_dir
from ..errors import ScalyticsError, UsageError

if TYPE_CHECKING:
    from ..server import ServerSettings

DEV_TOKEN_TTL_S = 12 * 3600
log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    from .args import add_config_option

    parser = commands.add_parser(
        "serve", help="run the WebSocket server",
        description="Settings come from sconnect.yaml (--server-config, SCONNECT_SERVER_CONFIG, or the config "
        "directory's sconnect.yaml), then SCONNECT_* environment variables, then these flags.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--server-config", metavar="FILE", help="server settings file (default: <config>/sconnect.yaml if present)"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="state directory (env SCONNECT_STATE_DIR; default ./.sconnect)"
    )
    parser.add_argument("--host", help="address to bind (env SCONNECT_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=_port_argument,
                        help="port, 0 picks a free one (env SCONNECT_PORT; default 8765)")
    parser.add_argument("--health-port", type=_port_argument,
                        help="serve /healthz, /readyz and /metrics on this port, 0 picks one "
                        "(env SCONNECT_HEALTH_PORT; default off)")
    parser.add_argument("--health-host", metavar="ADDRESS",
                        help="address of the health/metrics listener (env SCONNECT_HEALTH_HOST; default 127.0.0.1: "
                        "metrics are not for the public)")
    parser.add_argument("--mcp-port", type=int,
                        help="serve MCP (Streamable HTTP, path /mcp) on this port of --host, 0 picks one "
                        "(env SCONNECT_MCP_PORT; default off; needs the 'mcp' extra)")
    parser.add_argument("--console-port", type=_port_argument,
                        help="serve the browser console (chat, approvals, audit) on this port, 0 picks one "
                        "(env SCONNECT_CONSOLE_PORT; default off; needs the 'console' extra)")
    parser.add_argument("--console-host", metavar="ADDRESS",
                        help="address of the console listener (env SCONNECT_CONSOLE_HOST; default 127.0.0.1)")
    parser.add_argument("--mcp-anonymous-role", metavar="ROLE",
                        help="give MCP callers without a token this role (loopback --host only; for local trials)")
    parser.add_argument("--shutdown-grace", metavar="DURATION",
                        help="on SIGTERM/SIGINT, how long running turns may finish "
                        "(env SCONNECT_SHUTDOWN_GRACE; default 10s)")
    parser.add_argument("--tls-cert", metavar="PEM", help="certificate chain for wss:// (env SCONNECT_TLS_CERT)")
    parser.add_argument("--tls-key", metavar="PEM", help="its private key (env SCONNECT_TLS_KEY)")
    parser.add_argument("--insecure-public", action="store_true", default=None,
                        help="allow a non-loopback --host without TLS (tokens would cross the network in clear)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="override one limit, e.g. --limit idle_timeout=5m (env SCONNECT_LIMITS_<NAME>); "
                        "see README")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="stderr log lines as text or one JSON object each (env SCONNECT_LOG_FORMAT; default text)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: create a JWT secret in the state directory when none is configured "
        "and print ready tokens for a user and an admin (and one-time console links with --console-port)",
    )
    parser.set_defaults(run=run)


def _port_argument(text: str) -> int:
    from ..server.settings import check_port

    try:
        return check_port(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free port)") from None


# Settings keys -> how the flag and the variable that set them are spelled (for messages).
_SPELLING = {
    "host": ("--host", "SCONNECT_HOST"), "port": ("--port", "SCONNECT_PORT"),
    "health_port": ("--health-port", "SCONNECT_HEALTH_PORT"), "health_host": ("--health-host", "SCONNECT_HEALTH_HOST"),
    "state_dir": ("--state-dir", "SCONNECT_STATE_DIR"),
    "shutdown_grace": ("--shutdown-grace", "SCONNECT_SHUTDOWN_GRACE"),
    "tls_cert": ("--tls-cert", "SCONNECT_TLS_CERT"), "tls_key": ("--tls-key", "SCONNECT_TLS_KEY"),
    "insecure_public": ("--insecure-public", "SCONNECT_INSECURE_PUBLIC"),
    "mcp_port": ("--mcp-port", "SCONNECT_MCP_PORT"),
    "mcp_anonymous_role": ("--mcp-anonymous-role", "SCONNECT_MCP_ANONYMOUS_ROLE"),
    "console_port": ("--console-port", "SCONNECT_CONSOLE_PORT"),
    "console_host": ("--console-host", "SCONNECT_CONSOLE_HOST"),
    # No flag: a command line is visible to every user of the host, and the URL may hold a password.
    "database_url": ("SCONNECT_DATABASE_URL", "SCONNECT_DATABASE_URL"),
}


def _shown(key: str, value: Any) -> Any:
    """A value as messages may show it: a database URL without its password."""
    if key == "database_url" and isinstance(value, str):
        from ..pg import describe

        return describe(value)
    return value


def _layers(args: argparse.Namespace, config_dir: Path) -> dict[str, Any]:
    """File, then environment, then flags: the later wins (and says so when it overrides the file)."""
    from ..server.options import LIMITS, limits_from_environment, limits_from_flags, read_server_file

    limit_names = {field: f"limits.{name}" for name, (field, _parse) in LIMITS.items()}

    env = os.environ
    chosen: dict[str, Any] = {"host": "127.0.0.1", "port": 8765, "state_dir": ".sconnect", "shutdown_grace": "10s"}
    # Where each value came from: the settings file, or the flag/variable that overrode it.
    source: dict[str, str] = {}
    from_file: dict[str, Any] = {}
    server_file = args.server_config or env.get("SCONNECT_SERVER_CONFIG")
    if server_file is None and (config_dir / "sconnect.yaml").is_file():
        server_file = str(config_dir / "sconnect.yaml")
    if server_file:
        from_file = read_server_file(Path(server_file))
        chosen.update(from_file)
        source.update(dict.fromkeys(from_file, str(server_file)))
    overrides: list[str] = []

    def layer(values: dict[str, Any], spelled: Any) -> None:
        for key, value in values.items():
            if key in from_file and from_file[key] != value:
                overrides.append(f"{spelled(key)} overrides {limit_names.get(key, key)}: {_shown(key, from_file[key])}")
            chosen[key] = value
            source[key] = spelled(key)

    from_env = {
        "host": env.get("SCONNECT_HOST"), "port": env.get("SCONNECT_PORT"),
        "health_port": env.get("SCONNECT_HEALTH_PORT"),
        "health_host": env.get("SCONNECT_HEALTH_HOST"), "mcp_port": env.get("SCONNECT_MCP_PORT"),
        "mcp_anonymous_role": env.get("SCONNECT_MCP_ANONYMOUS_ROLE"),
        "console_port": env.get("SCONNECT_CONSOLE_PORT"), "console_host": env.get("SCONNECT_CONSOLE_HOST"),
        "database_url": env.get("SCONNECT_DATABASE_URL"),
        "state_dir": env.get("SCONNECT_STATE_DIR"), "shutdown_grace": env.get("SCONNECT_SHUTDOWN_GRACE"),
        "tls_cert": env.get("SCONNECT_TLS_CERT"), "tls_key": env.get("SCONNECT_TLS_KEY"),
        "insecure_public": (env.get("SCONNECT_INSECURE_PUBLIC", "").lower() in ("1", "true", "yes")) or None,
    }
    layer({key: value for key, value in from_env.items() if value not in (None, "")},
          lambda key: f"{_SPELLING[key][1]}={_shown(key, env.get(_SPELLING[key][1]))}")
    layer(limits_from_environment(env), lambda key: f"SCONNECT_{limit_names[key].upper().replace('.', '_')}")
    from_flags = {
        "host": args.host, "port": args.port, "health_port": args.health_port, "health_host": args.health_host,
        "state_dir": args.state_dir,
        "shutdown_grace": args.shutdown_grace, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
        "insecure_public": args.insecure_public, "mcp_port": args.mcp_port,
        "mcp_anonymous_role": args.mcp_anonymous_role,
        "console_port": args.console_port, "console_host": args.console_host,
    }
    layer({key: value for key, value in from_flags.items() if value is not None},
          lambda key: f"{_SPELLING[key][0]} {getattr(args, key)}")
    layer(limits_from_flags(args.limit), lambda key: f"--limit {limit_names[key].removeprefix('limits.')}=...")
    for key in ("port", "health_port", "mcp_port", "console_port"):
        if chosen.get(key) is not None:
            chosen[key] = _port(chosen[key], source.get(key, key))
    if overrides:
        log.warning("%s (from %s)", "; ".join(overrides), server_file)
    chosen["shutdown_grace_s"] = _duration("shutdown grace", str(chosen.pop("shutdown_grace")))
    return chosen


def _port(value: Any, where: str) -> int:
    """A port from any layer; UsageError (exit 2) naming where it was set when it is not one."""
    from ..server.settings import check_port

    try:
        return check_port(int(value) if isinstance(value, str) else value)
    except ValueError:
        raise UsageError(f"{where}: {value!r} is not a port number (0-65535; 0 picks a free port)") from None


def _check_tls(cert: Path, key: Path) -> None:
    """Load the pair once before binding, so a bad file is named instead of blamed on the port."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError:
        missing = next((path for path in (cert, key) if not path.is_file()), cert)
        raise UsageError(f"TLS: {missing}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"TLS: cannot use certificate {cert} with key {key}: {exc}") from None


def _check_exposure(chosen: dict[str, Any]) -> None:
    """A non-loopback address without TLS needs an explicit yes, and is still warned about."""
    import ipaddress

    host = chosen["host"]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if bool(chosen.get("tls_cert")) != bool(chosen.get("tls_key")):
        raise UsageError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if loopback or chosen.get("tls_cert"):
        return
    if not chosen.pop("insecure_public", False):
        raise UsageError(
            f"refusing to serve {host} without TLS: tokens would cross the network in clear. "
            "Give --tls-cert and --tls-key, or --insecure-public if something in front terminates TLS"
        )
    log.warning("serving %s without TLS (--insecure-public): put a TLS-terminating proxy in front", host)


def _check_console(chosen: dict[str, Any]) -> None:
    """The console needs hypercorn; off loopback it needs TLS (a session cookie in clear is a token in clear)."""
    if chosen.get("console_port") is None:
        return
    import importlib.util
    import ipaddress

    if importlib.util.find_spec("hypercorn") is None:
        raise UsageError("--console-port needs hypercorn: pip install 'scalytics-connect[console]'")
    host = chosen.get("console_host", "127.0.0.1")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not chosen.get("tls_cert") and not chosen.get("insecure_public"):
        raise UsageError(
            f"refusing to serve the console on {host} without TLS: its session cookie would cross the network "
            "in clear. Give --tls-cert and --tls-key, or --insecure-public if something in front terminates TLS"
        )


def _check_mcp(chosen: dict[str, Any], roles: frozenset[str]) -> None:
    """MCP needs its optional dependencies; an anonymous role needs MCP on a loopback address."""
    role = chosen.get("mcp_anonymous_role")
    if role is not None:
        from ..mcp._loopback import is_loopback

        if role not in roles:
            raise UsageError(f"--mcp-anonymous-role: no policy declares the role {role!r} "
                             f"(declared: {', '.join(sorted(roles))})")
        if chosen.get("mcp_port") is None:
            raise UsageError("--mcp-anonymous-role needs --mcp-port")
        if not is_loopback(chosen["host"]):
            raise UsageError(
                f"--mcp-anonymous-role: refusing to serve callers without a token on {chosen['host']}: "
                "only a loopback --host may"
            )
    if chosen.get("mcp_port") is not None:
        import importlib.util

        missing = [name for name in ("mcp", "hypercorn") if importlib.util.find_spec(name) is None]
        if missing:
            raise UsageError(
                f"--mcp-port needs {' and '.join(missing)}: pip install 'scalytics-connect[mcp]'"
            )


def _check_database(chosen: dict[str, Any]) -> None:
    """A PostgreSQL URL needs the optional driver; anything else is a typo to name now."""
    url = chosen.get("database_url")
    if url is None:
        return
    from ..pg import is_postgres_url

    if not is_postgres_url(url):
        raise UsageError("database_url (SCONNECT_DATABASE_URL): a PostgreSQL URL starts with postgresql://")
    import importlib.util

    missing = [name for name in ("psycopg", "psycopg_pool") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"database_url needs {' and '.join(missing)}: pip install 'scalytics-connect[postgres]'")


def run(args: argparse.Namespace) -> int:
    from ..logs import configure

    configure(args.log_format or os.environ.get("SCONNECT_LOG_FORMAT", "text"))
    config_dir = resolve_config_dir(args.config)
    config = load_config(config_dir)  # refuse to start on a broken configuration, with every error
    chosen = _layers(args, config_dir)
    _check_console(chosen)
    _check_exposure(chosen)
    _check_mcp(chosen, frozenset(config.roles))
    _check_database(chosen)
    chosen.pop("insecure_public", None)
    state_dir = Path(chosen.pop("state_dir"))
    from ..toolrun import state_dir_problem

    if (unreachable := state_dir_problem(state_dir)) is not None:
        raise UsageError(unreachable)
    from ..auth import load_settings

    auth = load_settings(os.environ, state_dir, dev=args.dev)
    if args.dev:
        _seed_workspace(state_dir)
    # The server and Trio load only for this command, keeping the other commands quick to start.
    import trio

    from ..server import ServerSettings

    for key in ("tls_cert", "tls_key"):
        if chosen.get(key):
            chosen[key] = Path(chosen[key])
    if chosen.get("tls_cert"):
        _check_tls(chosen["tls_cert"], chosen["tls_key"])
    settings = ServerSettings(
        config_dir=config_dir, state_dir=state_dir, auth=auth, reload_signals=(signal.SIGHUP,), **chosen
    )
    failed: list[OSError] = []
    refused: list[ScalyticsError] = []
    try:
        trio.run(_main, settings, args.dev)
    except* ScalyticsError as group:
        # A listener could not be opened (a port in use, an address not on this host: ListenError),
        # or the state directory refused us (audit key, a second writer, ...): its message, no traceback.
        refused.extend(_leaves(group))  # type: ignore[arg-type]
    except* OSError as group:
        # Anything else the system refused while serving (EMFILE, a full disk, ...): said as what it is.
        failed.extend(_leaves(group))
    if refused:
        print(f"sconnect: {refused[0]}", file=sys.stderr)
        return 2
    if failed:
        error = failed[0]
        where = f" ({error.filename})" if error.filename else ""
        log.error("stopped by an operating system error", exc_info=error)
        print(f"sconnect: stopped by an operating system error: {error.strerror or error}{where} "
              f"[{type(error).__name__}, errno {error.errno}]", file=sys.stderr)
        return 1
    return 0


async def _main(settings: ServerSettings, dev: bool) -> None:
    import trio

    import sandbox

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(_serve_then_stop, settings, nursery.cancel_scope)
            # Everything loaded so far lives as long as the process: take it out of the cyclic
            # garbage collector's full passes, which otherwise walk it all while holding the
            # interpreter (measured: 60-140 ms pauses of every client while one sends large
            # frames; bench/bench_attacks.py).
            gc.collect()
            gc.freeze()
            url = handle.websocket
            print(url, flush=True)
            if handle.health:
                print(f"health and metrics: {handle.health} (/healthz /readyz /metrics)", flush=True)
            if handle.mcp:
                print(f"mcp: {handle.mcp}", flush=True)
            if handle.console:
                print(f"console: {handle.console.url}", flush=True)
            shared = f"  database: {_shown('database_url', settings.database_url)}" if settings.database_url else ""
            print(f"config: {settings.config_dir}  state: {settings.state_dir}{shared}", flush=True)
            print(sandbox.detect().summary, flush=True)
            if dev:
                _print_dev_help(settings, url, handle.console)
            async for signum in signals:
                if not handle.stopping:
                    log.info("received %s: shutting down gracefully (up to %gs; again to stop at once)",
                             signal.Signals(signum).name, settings.shutdown_grace_s)
                    handle.stop()
                else:
                    log.warning("received %s again: stopping at once", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()


async def _serve_then_stop(settings: ServerSettings, done: Any, *, task_status: Any) -> None:
    """Run the server; when it has stopped (gracefully), end the signal loop as well."""
    from ..server import serve

    await serve(settings, task_status=task_status)
    done.cancel()


def _leaves(group: BaseExceptionGroup[Any]) -> list[Any]:
    found: list[Any] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _seed_workspace(state_dir: Path) -> None:
    """--dev: give alice's empty workspace the notes.txt the README's first session reads."""
    from ..server.app import prepare_state_dir
    from ..toolrun import subject_workspace

    prepare_state_dir(state_dir.resolve())
    workspace = subject_workspace(state_dir / "workspace", "alice")
    if any(workspace.iterdir()):
        return
    notes = workspace / "notes.txt"
    notes.write_text("buy milk\ncall the plumber\n", encoding="utf-8")
    if os.geteuid() == 0:
        import sandbox

        os.chown(notes, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


def _duration(option: str, text: str) -> float:
    from ..config.units import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _print_dev_help(settings: ServerSettings, url: str, console: Any = None) -> None:
    from ..auth import issue, verify

    user = issue(settings.auth, "alice", ["user"], DEV_TOKEN_TTL_S)
    admin = issue(settings.auth, "root-admin", ["admin", "user"], DEV_TOKEN_TTL_S)
    print(f"user token (alice, 12h):  {user}", flush=True)
    print(f"admin token (root-admin, 12h): {admin}", flush=True)
    if console is not None:
        # One-time links: the code (in the fragment, never sent in a request line) is spent at sign-in.
        print(f"console for alice (one-time link):  {console.signin_link(verify(user, settings.auth))}", flush=True)
        print(f"console for root-admin (one-time link): {console.signin_link(verify(admin, settings.auth))}",
              flush=True)
    print("try:", flush=True)
    # In the environment, not on the command line: a process list shows every argument to every user.
    print(f"  SCONNECT_TOKEN={user} sconnect chat --url {shlex.quote(url)} --agent assistant", flush=True)
