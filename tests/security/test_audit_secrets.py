"""Secret tool arguments at rest (issue 11, item 15).

The attacks: (1) the audit log's digest of the unredacted arguments was a plain SHA-256,
so a 4-digit PIN in a secret argument was recovered by hashing the 10,000 candidates;
(2) pending actions and the session history kept secret arguments in clear in
``sconnect.db``.

- ``test_secrets_never_reach_the_state_directory_and_digests_resist_guessing``: a real
  server with a level-2 test tool whose ``pin`` is a secret argument and which echoes
  its arguments. A user calls it directly, once more with a PIN too long (the
  validation error quotes it), and through an agent turn (the agent's tool call carries
  the PIN, the tool's result echoes it into the history); an admin approves. Then the
  raw bytes of every file under the state directory (databases,
  their WAL files, the checkpoint log, workspace), while the server runs and after it
  stopped, and the server's log output do not contain the PIN. Trying all 10,000 PINs
  with the code's own hash (``engine.canonical.digest``) against the audit records' and
  the pending actions' digests finds nothing; with the key (read from beside the state
  directory) the right PIN is found, so the check could fail.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import jwt
import trio

from engine.audit import default_key_path, query
from engine.audit._keys import derive
from engine.canonical import digest, keyed_digest
from engine.client import Client, open_client
from engine.protocol import AgentAction

from .cliserver import SECRET, place, serving

PIN = "vault-pin-4711"
VAULT_TOOL = """\
name: vault_note
description: Store a note under a PIN (test tool; echoes its arguments, PIN included).
permission_level: 2
command: [/bin/cat]
secret_arguments: [pin]
parameters:
  type: object
  properties:
    note: {type: string}
    pin: {type: string, maxLength: 24}
  required: [pin]
  additionalProperties: false
"""
VAULT_AGENT = f"""\
name: vaulter
description: Stores notes in the vault (test agent).
tools: [vault_note]
approval_timeout: 30s
model:
  provider: rules
  fallback: I only store notes.
  rules:
    - match: '(?i)\\bstore\\b'
      tool: vault_note
      arguments: {{note: groceries, pin: '{PIN}'}}
      answer: Stored.
"""


def _token(sub: str, role: str) -> str:
    return jwt.encode({"sub": sub, "roles": [role], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def _approve(admin: Client, count: int) -> None:
    approved = 0
    async for event in admin.events():
        if isinstance(event, AgentAction) and event.requires_approval:
            await admin.answer(event.action_id, True)
            approved += 1
            if approved == count:
                return


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def _guess(stored: str, fixed: dict[str, str]) -> list[str]:
    """Every candidate PIN whose plain digest matches ``stored`` (the attack)."""
    return [pin for pin in (f"vault-pin-{n:04d}" for n in range(10_000)) if digest({**fixed, "pin": pin}) == stored]


async def test_secrets_never_reach_the_state_directory_and_digests_resist_guessing() -> None:
    with place() as where:
        (where.config / "tools.d" / "vault_note.yaml").write_text(VAULT_TOOL)
        (where.config / "agents.d" / "vaulter.yaml").write_text(VAULT_AGENT)
        async with serving(where) as served:
            with trio.fail_after(60):
                async with open_client(served.url, _token("root", "admin")) as admin, \
                        open_client(served.url, _token("alice", "user")) as user, trio.open_nursery() as nursery:
                    nursery.start_soon(_approve, admin, 2)
                    result = await user.call_tool("vault_note", {"note": "groceries", "pin": PIN})
                    assert str(result.status) == "ok" and result.output["pin"] == PIN, result  # echoed
                    refused = await user.call_tool("vault_note", {"note": "groceries", "pin": PIN + "-" * 20})
                    assert PIN in json.dumps(refused.output)  # the validation error quotes it
                    sid = (await user.start_session("vaulter")).session_id
                    turn = await user.converse(sid, "please store my note")
                    assert [str(r.status) for r in turn.results] == ["ok"] and turn.results[0].output["pin"] == PIN
                    assert turn.actions[0].arguments["pin"] == PIN  # the model's call did carry it
            assert _files_holding(where.state, PIN.encode()) == []  # with the WAL files in place
        assert _files_holding(where.state, PIN.encode()) == []
        assert PIN not in served.stderr

        conn = sqlite3.connect(where.state / "sconnect.db")
        pending = conn.execute("SELECT arguments, arguments_digest FROM pending_actions").fetchall()
        history = [row[0] for row in conn.execute("SELECT message FROM messages")]
        conn.close()
        assert len(pending) == 2 and all('"pin":"[redacted]"' in args for args, _ in pending)
        assert any("tool_calls" in message and "[redacted]" in message for message in history)

        records = [r for r in query(where.state, tool="vault_note") if r.arguments_digest]
        assert {r.kind for r in records} >= {"decision", "approval", "execution"}
        key = derive(default_key_path(where.state).read_bytes(), "arguments")
        fixed = {"note": "groceries"}
        stored = {r.arguments_digest for r in records} | {d for _, d in pending}
        with_key = {keyed_digest(key, {**fixed, "pin": pin}): pin for pin in (PIN, PIN + "-" * 20)}
        assert {with_key.get(d) for d in stored} == {PIN, PIN + "-" * 20}  # with the key: these PINs exactly
        for one in stored:
            assert one is not None and _guess(one, fixed) == []  # the code's own hash, no key: nothing
