"""``serve_console``: hypercorn (Trio worker) serving :class:`ConsoleApp` in the caller's nursery.

Started means listening; ``task_status.started`` gets a :class:`ConsoleHandle` with the
URL (port 0 resolved) and a way to mint one-time sign-in links (``serve --dev``).
Graceful stop: ``shutdown`` set makes hypercorn stop accepting and close its
connections within the hub's grace period; cancelling stops at once.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import attrs
import trio

from ..auth import Principal
from ..server.hub import Hub
from ._app import ConsoleApp
from ._signin import SignIns

log = logging.getLogger(__name__)


@attrs.frozen
class ConsoleHandle:
    url: str
    signins: SignIns = attrs.field(repr=False)

    def signin_link(self, principal: Principal) -> str:
        """A one-time link: the code rides in the fragment, which browsers never send to a server."""
        return f"{self.url}#code={self.signins.issue_code(principal)}"


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_console(
    hub: Hub, host: str, port: int, shutdown: trio.Event, *,
    admit: Callable[[str], tuple[int, str] | None], leave: Callable[[str], None],
    task_status: trio.TaskStatus[ConsoleHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the console until ``shutdown`` is set (then drain) or cancelled."""
    import hypercorn.trio  # only when the console is on
    from hypercorn.config import Config

    settings = hub.settings
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = settings.shutdown_grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = settings.max_frame_bytes
    # hypercorn pings the pages itself (ASGI shows the application no pong): a peer that
    # vanished is then found when a ping cannot be written.
    config.websocket_ping_interval = settings.ping_interval_s
    secure = settings.tls_cert is not None
    if secure:
        config.certfile, config.keyfile = str(settings.tls_cert), str(settings.tls_key)
    signins = SignIns(hub.store)
    swept = await signins.sweep()
    if swept:
        log.info("console: %d expired or signed-out session(s) swept", swept)
    app = ConsoleApp(hub=hub, signins=signins, hosts=frozenset(), secure=secure, admit=admit, leave=leave)
    async with trio.open_nursery() as nursery:
        serving = partial(hypercorn.trio.serve, cast(Any, app), config, shutdown_trigger=shutdown.wait)
        binds = await nursery.start(serving)
        bound_port = int(binds[0].rsplit(":", 1)[1])
        named = f"[{host}]" if ":" in host else host
        hosts = {f"{named}:{bound_port}"}
        if _is_loopback(host):
            hosts |= {f"localhost:{bound_port}", f"127.0.0.1:{bound_port}", f"[::1]:{bound_port}"}
        app.hosts = frozenset(hosts)
        scheme = "https" if secure else "http"
        handle = ConsoleHandle(url=f"{scheme}://{named}:{bound_port}/", signins=signins)
        log.info("console: %s", handle.url)
        task_status.started(handle)
        await trio.sleep_forever()
