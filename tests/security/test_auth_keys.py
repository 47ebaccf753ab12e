"""A development secret left in the state directory (issue 11, item 19).

The attack: ``serve --dev`` once wrote ``<state>/jwt-secret``; the operator later
configured an identity provider's RS256 key, and the server silently accepted HS256
tokens signed with the leftover secret as well — anyone who read that file (a backup, a
tool reaching the state directory) could mint tokens for any subject.

- ``test_a_stale_dev_secret_is_not_a_key_beside_an_identity_providers``: a real server
  started with ``--dev`` creates the secret (and accepts tokens signed with it); the
  next start without ``--dev``, with ``SCONNECT_JWT_PUBLIC_KEY_FILE`` set, refuses an
  HS256 token minted with that secret (401, ``bad_algorithm``) and accepts the
  provider's RS256 token; its start-up log names the key source and the algorithms in
  force in one line and says the leftover secret is ignored.
- ``test_token_issue_still_works_for_a_dev_server``: ``sconnect token issue`` with the
  dev server's state directory (the README's way) mints a token that server accepts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from trio_websocket import ConnectionRejected

from engine.client import open_client

from .cliserver import place, sconnect, serving

NO_SECRET = {"SCONNECT_JWT_SECRET": ""}


def _claims(sub: str) -> dict[str, object]:
    return {"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}


async def _status(url: str, token: str) -> tuple[int, str]:
    try:
        async with open_client(url, token):
            return 101, ""
    except ConnectionRejected as exc:
        return exc.status_code, json.loads(exc.body or b"{}").get("message", "")


async def test_a_stale_dev_secret_is_not_a_key_beside_an_identity_providers(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    with place() as where:
        with trio.fail_after(60):
            async with serving(where, "--dev", env=NO_SECRET) as served:
                stale = (where.state / "jwt-secret").read_bytes().strip()
                forged = jwt.encode(_claims("root-admin"), stale, algorithm="HS256")
                assert (await _status(served.url, forged))[0] == 101  # in dev mode it is the key
            production = {**NO_SECRET, "SCONNECT_JWT_PUBLIC_KEY_FILE": str(pem)}
            async with serving(where, env=production) as served:
                status, message = await _status(served.url, forged)
                assert status == 401 and message.startswith("bad_algorithm:"), message
                genuine = jwt.encode(_claims("alice"), private, algorithm="RS256")
                assert (await _status(served.url, genuine))[0] == 101
        lines = [line for line in served.stderr.splitlines() if "JWT keys:" in line]
        assert len(lines) == 1, served.stderr
        assert f"RS256 with the RSA key from {pem}" in lines[0]
        assert lines[0].endswith("algorithms accepted: RS256")
        assert "HS256" not in lines[0] and "jwt-secret" not in lines[0]
        assert f"ignoring {where.state / 'jwt-secret'}" in served.stderr


async def test_token_issue_still_works_for_a_dev_server() -> None:
    with place() as where, trio.fail_after(60):
        async with serving(where, "--dev", env=NO_SECRET) as served:
            minted = await sconnect("token", "issue", "--sub", "alice", "--role", "user", "--state-dir",
                                    str(where.state), "--config", str(where.config), env=NO_SECRET)
            assert minted.code == 0, minted.stderr
            assert (await _status(served.url, minted.stdout.strip()))[0] == 101
        lines = [line for line in served.stderr.splitlines() if "JWT keys:" in line]
        assert len(lines) == 1 and "HS256 with the secret from" in lines[0] and "(--dev" in lines[0]
