"""Subjects that look like someone else, or that carry terminal escapes (issue 11, item 17).

The attacks: a token for ``"root-admin "`` (trailing space) approved ``root-admin``'s own
level-2 request (a different subject that reads the same); ANSI escape sequences in
``sub`` forged lines in ``sconnect audit tail``.

- ``test_lookalike_and_escape_subjects_are_refused_with_a_reason``: against a real
  server, validly signed tokens for ``"root-admin "``, ``" root-admin"``, a ``sub`` with
  an ANSI sequence and a newline, and a role with a control character each get HTTP 401
  whose body names the reason (``bad_claims``, surrounding whitespace / control
  characters); ``root-admin`` itself connects. ``sconnect token issue`` refuses to mint
  such a subject.
- ``test_audit_tail_and_query_show_control_characters_escaped``: a real server records a
  read of a resource URI that carries ANSI sequences, a carriage return and a newline
  spelling a forged audit line; the real audit API records a subject and an approver with
  the same; ``sconnect audit tail`` and ``sconnect audit query`` print them escaped: no
  escape character reaches the terminal and each record stays on one line.
"""

from __future__ import annotations

import contextlib
import json
import time

import jwt
import trio
from trio_websocket import ConnectionRejected

from engine.audit import AuditEvent, AuditLog
from engine.client import ServerError, open_client

from .cliserver import SECRET, place, sconnect, serving

FORGED = ("file://local/documents/x\x1b[2K\r\n999  2025-01-01 00:00:00  execution  root-admin  tool.call  "
          "send_payment  allow  -  ok")


def _token(sub: str, roles: list[str]) -> str:
    return jwt.encode({"sub": sub, "roles": roles, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def _refusal(url: str, token: str) -> tuple[int, dict[str, str]]:
    try:
        async with open_client(url, token):
            pass
    except ConnectionRejected as exc:
        return exc.status_code, json.loads(exc.body or b"{}")
    raise AssertionError("the token was accepted")


async def test_lookalike_and_escape_subjects_are_refused_with_a_reason() -> None:
    with place() as where:
        async with serving(where) as served:
            with trio.fail_after(30):
                async with open_client(served.url, _token("root-admin", ["admin"])):
                    pass  # the genuine subject connects
                cases = [
                    ("root-admin ", ["admin"], "sub claim has surrounding whitespace"),
                    (" root-admin", ["admin"], "sub claim has surrounding whitespace"),
                    ("root\x1b[31m-admin\nfake", ["admin"], "sub claim contains control characters"),
                    ("root-admin\u202e", ["admin"], "sub claim contains control characters"),
                    ("bob", ["admin\x1b[0m"], "contains control characters"),
                    ("bob", ["admin "], "has surrounding whitespace"),
                ]
                for sub, roles, reason in cases:
                    status, body = await _refusal(served.url, _token(sub, roles))
                    assert status == 401
                    assert body["code"] == "unauthorized" and body["message"].startswith("bad_claims:"), body
                    assert reason in body["message"], (sub, roles, body)
        assert "\x1b" not in served.stderr
        minted = await sconnect("token", "issue", "--sub", "root-admin ", "--role", "admin",
                                "--state-dir", str(where.state), "--config", str(where.config))
        assert minted.code == 2 and "surrounding whitespace" in minted.stderr and minted.stdout == ""


async def test_audit_tail_and_query_show_control_characters_escaped() -> None:
    with place() as where:
        async with serving(where) as served:
            with trio.fail_after(30):
                async with open_client(served.url, _token("alice", ["user"])) as client:
                    with contextlib.suppress(ServerError):  # refused or not found: audited either way
                        await client.read_resource(FORGED)
        async with await AuditLog.open(where.state) as log, trio.open_nursery() as nursery:
            await nursery.start(log.run)
            await log.record(AuditEvent(kind="approval", subject="mallory\x1b]0;title\x07\r\nroot", action="tool.call",
                                        target="send_payment", decided_by="person", approver="admin\x1b[8m",
                                        outcome="approved", arguments={"memo": "\x1b[2J"}))
            await log.aclose()
        for command in (("audit", "tail"), ("audit", "query", "--since", "1h")):
            shown = await sconnect(*command, "--state-dir", str(where.state))
            assert shown.code == 0, shown.stderr
            out = shown.stdout
            assert "\x1b" not in out and "\r" not in out and "\x07" not in out
            lines = out.splitlines()
            assert len(lines) == 1 + len([line for line in lines[1:] if line.split()[0].isdigit()])
            assert "documents/x\\x1b[2K\\x0d" in out  # the forged line is data, on its record's row
            assert "mallory\\x1b]0;title\\x07\\x0d\\x0aroot" in out and "admin\\x1b[8m" in out
