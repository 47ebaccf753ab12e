"""``sconnect serve``: run the WebSocket server on a configuration until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_config, resolve_config_dir

if TYPE_CHECKING:
    from ..server import ServerSettings

DEV_TOKEN_TTL_S = 12 * 3600


def register(commands: Any) -> None:
    from .main import add_config_option, add_state_option

    parser = commands.add_parser("serve", help="run the WebSocket server")
    add_config_option(parser)
    add_state_option(parser)
    parser.add_argument("--host", default=os.environ.get("SCONNECT_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCONNECT_PORT", "8765")), help="port (0 picks a free one; default 8765)")
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ["SCONNECT_HEALTH_PORT"]) if os.environ.get("SCONNECT_HEALTH_PORT") else None,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: off)",
    )
    parser.add_argument(
        "--shutdown-grace",
        default=os.environ.get("SCONNECT_SHUTDOWN_GRACE", "10s"),
        help="on SIGTERM/SIGINT, how long running turns may finish before they are cancelled (default 10s)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: create a JWT secret in the state directory when none is configured "
        "and print ready tokens for a user and an admin",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    state_dir = Path(args.state_dir)
    config_dir = resolve_config_dir(args.config)
    load_config(config_dir)  # refuse to start on a broken configuration, with every error
    from ..auth import load_settings

    auth = load_settings(os.environ, state_dir, dev=args.dev)
    if args.dev:
        _seed_workspace(state_dir)
    # The server and Trio load only for this command, keeping the other commands quick to start.
    import trio

    from ..server import ServerSettings

    settings = ServerSettings(
        config_dir=config_dir, state_dir=state_dir, auth=auth, host=args.host, port=args.port,
        reload_signals=(signal.SIGHUP,), health_port=args.health_port,
        shutdown_grace_s=float(_duration("--shutdown-grace", args.shutdown_grace)),
    )
    failed: list[OSError] = []
    try:
        trio.run(_main, settings, args.dev)
    except* OSError as group:
        # Binding failed (a port in use, an address not on this host): one line, not a traceback.
        failed.extend(_leaves(group))
    if failed:
        reason = failed[0].strerror or str(failed[0])
        print(f"sconnect: cannot listen on {args.host}:{args.port}: {reason} "
              "(pick another --port, or 0 for a free one)", file=sys.stderr)
        return 2
    return 0


async def _main(settings: ServerSettings, dev: bool) -> None:
    import trio

    import sandbox

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(_serve_then_stop, settings, nursery.cancel_scope)
            url = handle.websocket
            print(url, flush=True)
            if handle.health:
                print(f"health and metrics: {handle.health} (/healthz /readyz /metrics)", flush=True)
            print(f"config: {settings.config_dir}  state: {settings.state_dir}", flush=True)
            print(sandbox.detect().summary, flush=True)
            if dev:
                _print_dev_help(settings, url)
            async for signum in signals:
                if not handle.stopping:
                    print(f"received {signal.Signals(signum).name}: shutting down gracefully "
                          f"(up to {settings.shutdown_grace_s:g}s; again to stop at once)", file=sys.stderr, flush=True)
                    handle.stop()
                else:
                    print("stopping at once", file=sys.stderr, flush=True)
                    nursery.cancel_scope.cancel()


async def _serve_then_stop(settings: ServerSettings, done: Any, *, task_status: Any) -> None:
    """Run the server; when it has stopped (gracefully), end the signal loop as well."""
    from ..server import serve

    await serve(settings, task_status=task_status)
    done.cancel()


def _leaves(group: BaseExceptionGroup[OSError]) -> list[OSError]:
    found: list[OSError] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _seed_workspace(state_dir: Path) -> None:
    """--dev: give an empty workspace the notes.txt the README's first session reads."""
    from ..server.app import prepare_state_dir

    prepare_state_dir(state_dir.resolve())
    workspace = state_dir / "workspace"
    if any(workspace.iterdir()):
        return
    notes = workspace / "notes.txt"
    notes.write_text("buy milk\ncall the plumber\n", encoding="utf-8")
    if os.geteuid() == 0:
        import sandbox

        os.chown(notes, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


def _duration(option: str, text: str) -> float:
    from ..config.units import parse_duration
    from ..errors import UsageError

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _print_dev_help(settings: ServerSettings, url: str) -> None:
    from ..auth import issue

    user = issue(settings.auth, "alice", ["user"], DEV_TOKEN_TTL_S)
    admin = issue(settings.auth, "root-admin", ["admin", "user"], DEV_TOKEN_TTL_S)
    print(f"user token (alice, 12h):  {user}", flush=True)
    print(f"admin token (root-admin, 12h): {admin}", flush=True)
    print("try:", flush=True)
    print(f"  sconnect chat --url {shlex.quote(url)} --token {user} --agent assistant", flush=True)
