"""``sconnect chat``: talk to an agent from a terminal (or a pipe), approving its actions,
calling tools and reading resources directly.

::

    $ export SCONNECT_TOKEN=...   # not --token: a command line is visible to every user
    $ sconnect chat --url ws://127.0.0.1:8765/ws --agent assistant
    session 3f2a… (agent assistant, active); resume later with --session 3f2a…
    > read notes.txt
    [action] read_file {"path": "notes.txt"} level 1 — needs approval by user: approve? [y/N] y
    approved
    [result] read_file ok
    notes.txt:
    buy milk
    > /call calculator {"expression": "17*23"}
    [action] calculator {"expression": "17*23"} level 0
    [result] calculator ok
      391
    > run sleep 15
    [action] shell {"command": "sleep 15"} level 2 — needs approval by an admin: waiting for one to answer
    /stop
    [result] shell cancelled: cancelled while waiting for approval
    [turn cancelled]
    > /end
    [state] terminated
    the session is over

A line is a message to the agent, an answer to a pending approval, or a command:

==========================  ========================================================
``/stop``                   cancel the running turn (its tools are killed); the
                            session stays, the next message works
``/end``                    end the session for good (it cannot be resumed) and the chat
``/pause``, ``/resume``     pause an idle session / resume it
``/tools``                  the tools this user may call directly
``/call TOOL {json}``       call a tool directly (``tool_call``), under the same policy,
                            approvals, sandbox and audit; the result shown readably
``/read URI``               read a resource directly (``resource_request``)
``/pending``                what waits for this user's answer (``action_list``)
``/approve ID``             approve an action (a unique prefix of its id is enough)
``/deny ID [reason]``       deny it, with a reason
``/good [comment]``         rate the last answer as good (``feedback``); ``/bad [comment]``
                            as bad; a later rating of the same answer replaces it
``/memory``                 what agents remember about this user (``memory_list``);
                            ``/memory forget ID`` (a unique prefix) or ``forget all``
``/help``, ``/quit``
==========================  ========================================================

An action waiting for this user's approval takes the next input line as the
answer: ``y``/``yes`` approves, ``n``/``no`` or an empty line denies (any
case); a command is run and the question asked again; anything else asks
again.  An admin is asked about other users' level-2 actions too, each named
with its requester and session; one that another admin answered, or that was
cancelled or expired, is withdrawn with a note.

Input while a turn (or a direct call) runs: commands act at once; a message is
not sent ("a turn is running; wait for the answer or /stop it").  Lines written
ahead (already buffered when the message was sent, as with a pipe filled in
advance) keep their order: they wait for the end of the turn, except that a
pending approval takes the next of them as its answer.

At a terminal (stdin and stdout both), lines are edited with prompt_toolkit
(history, completion of the commands); output is coloured unless ``NO_COLOR``
is set.  ``--json`` writes one JSON object per line instead: each server frame
as on the wire, and the chat's own notes as ``{"type": "chat", "event": ...}``.

Staying connected: the chat pings the server every ``--keepalive`` seconds and
treats an unanswered ping as a lost connection.  When the connection drops it
reconnects (``--reconnect`` attempts, with backoff from 0.5 s to 8 s), resumes
its session and asks again about what still waits for an answer; a turn that
was running is cancelled by the server and the chat says so.  An expired token
ends the chat instead (a new one is needed).

The token: ``$SCONNECT_TOKEN`` or ``--token-file FILE``.  ``--token`` works but
puts the token in the process list, where any local user (and a tool running in
the ``process`` sandbox) can read it: the chat warns once.  ``wss://`` with a
private CA: ``--cacert FILE``; TLS failures (untrusted certificate, host name
mismatch, not TLS) and timeouts are named.

Exit codes: 0 after ``/quit``, ``/end`` or end of input; 1 when the token is
refused, the server cannot be reached, the session cannot be started or
resumed, the token expires, or reconnecting failed; 2 for usage errors; 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..args import client_token

ADMIN_ROLE = "admin"

def register(commands: Any) -> None:
    parser = commands.add_parser("chat", help="talk to an agent, call tools and approve actions from the terminal")
    parser.add_argument(
        "--url", required=True, help="the server's WebSocket URL, path included (as `sconnect serve` prints it)"
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token", help="JWT to authenticate with; visible in the process list: prefer $SCONNECT_TOKEN or --token-file"
    )
    token.add_argument("--token-file", metavar="FILE", help="read the JWT from FILE (default: $SCONNECT_TOKEN)")
    parser.add_argument("--agent", default="assistant", help="the declared agent to talk to (default assistant)")
    parser.add_argument("--session", metavar="ID", help="resume this session instead of starting a new one")
    parser.add_argument("--cacert", metavar="FILE", help="trust this CA certificate (PEM) for wss://")
    parser.add_argument("--json", action="store_true", help="one JSON object per event on stdout, for scripts")
    parser.add_argument(
        "--reconnect", type=_count, default=5, metavar="N",
        help="reconnection attempts after the connection drops (default 5; 0: none)",
    )
    parser.add_argument(
        "--keepalive", type=_seconds, default=20.0, metavar="SECONDS",
        help="ping the server this often; no answer as long means the connection is dead (default 20)",
    )
    parser.set_defaults(run=run)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 100, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0.1 to 3600, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    if urlsplit(args.url).scheme not in ("ws", "wss"):
        print(f"sconnect chat: --url must be a ws:// or wss:// URL, not {args.url!r}", file=sys.stderr)
        return 2
    token = client_token(args, "chat")
    if token is None:
        return 2
    # Trio and the client load only for this command, keeping the other commands quick to start.
    import trio

    options = ChatOptions(
        url=args.url, token=token, agent=args.agent, session_id=args.session, cacert=args.cacert,
        json=args.json, retries=args.reconnect, keepalive_s=args.keepalive,
    )
    try:
        return trio.run(chat, options)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BaseExceptionGroup as group:
        if group.split(KeyboardInterrupt)[1] is None:
            print(file=sys.stderr)
            return 130
        raise


@attrs.frozen
class ChatOptions:
    """What ``sconnect chat`` was asked to do."""

    url: str
    token: str
    agent: str = "assistant"
    session_id: str | None = None
    cacert: str | None = None
    json: bool = False
    retries: int = 5
    keepalive_s: float = 20.0


async def chat(options: ChatOptions, *, stdin_fd: int = 0, out: Any = None) -> int:
    """Connect, start or resume the session, and converse until the user leaves; the exit code."""
    import functools

    import trio

    from ...client import open_client
    from ._chat import Chat
    from ._input import LineReader, TerminalReader
    from ._output import Output, wants_colour

    stream = out or sys.stdout
    terminal = not options.json and out is None and os.isatty(stdin_fd) and stream.isatty()
    connect = functools.partial(
        open_client, options.url, options.token, cacert=options.cacert, keepalive_s=options.keepalive_s
    )
    admin = ADMIN_ROLE in _token_roles(options.token)
    if not terminal:
        output = Output(stream, json=options.json, colour=not options.json and wants_colour(stream))
        session = Chat(output, LineReader(stdin_fd), admin=admin, retries=options.retries)
        return await session.run(connect, options.agent, options.session_id)
    from prompt_toolkit.patch_stdout import patch_stdout

    reader = TerminalReader()
    with patch_stdout(raw=True):
        output = Output(sys.stdout, colour=wants_colour(sys.__stdout__ or stream))
        session = Chat(output, reader, admin=admin, retries=options.retries)
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run)
            nursery.start_soon(reader.watch_interrupts)
            try:
                code = await session.run(connect, options.agent, options.session_id)
            finally:
                await reader.close()
                nursery.cancel_scope.cancel()
    return code


def _token_roles(token: str) -> frozenset[str]:
    """The roles a JWT claims, read without verifying it: only for hints, the server decides.

    The claim is ``roles`` unless ``$SCONNECT_JWT_ROLES_CLAIM`` names another (as for the
    server; a dotted name such as ``realm_access.roles`` is followed).
    """
    try:
        payload = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return frozenset()
    name = os.environ.get("SCONNECT_JWT_ROLES_CLAIM") or "roles"
    value = claims.get(name) if isinstance(claims, dict) else None
    if value is None and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list):
        return frozenset()
    return frozenset(role for role in value if isinstance(role, str))
