"""Two real ``sconnect serve`` processes on one PostgreSQL database serving different
configuration revisions, and ``sconnect check`` (a real subprocess) comparing them:

- test_check_names_a_mixed_fleet_and_sees_it_converge: A serves the shipped config, B
  the same with one extra policy rule. Each instance's decision audit records carry its
  own revision, and each one's /metrics says its revision (``sconnect_config_info``).
  ``check --strict`` on A's config lists both instances with both revisions, warns on
  stderr that they differ (and that B is not this configuration) and exits 3. B's
  policy is then made A's and B is sent SIGHUP: its reload is audited with the old and
  the new revision, and ``check --strict --json`` then reports both instances on A's
  revision, no warnings, exit 0.
- test_check_with_the_database_down: a database URL nobody listens on: one line saying it
  cannot connect (no traceback, no password), exit 2; ``--no-instances`` skips the
  comparison; a URL that is not PostgreSQL's is refused the same way.
- test_check_with_no_instance_live: a database nobody ever served on (no schema), then
  one migrated but with no instance running: check says none is live, exit 0.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import trio

from engine.client import open_client
from engine.config import load_config
from tests.security.cliserver import SECRET, place, sconnect, serving

EXTRA_RULE = """
  - id: extra-rule-on-b
    description: Only on instance B, so that its policy revision differs from A's.
    effect: allow
    subjects: {roles: [admin]}
    actions: [resource.read]
    targets:
      resources: ["file://local/documents/**"]
"""


def _token(sub: str) -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


def _short(revision: str) -> str:
    return revision[: len("sha256:") + 12]


def _live(url: str) -> dict[str, str | None]:
    """instance id -> the revision its fresh heartbeat row publishes."""
    from engine.server.pgbus import live_instances

    with psycopg.connect(url, autocommit=True) as conn:
        return {s.instance: s.revision for s in live_instances(conn, time.time())}


async def _wait_for(url: str, wanted: dict[str, str]) -> None:
    """Until every instance in ``wanted`` publishes its revision (heartbeats every 2 s)."""
    for _ in range(600):  # bounded; the caller's fail_after bounds the time
        live = await trio.to_thread.run_sync(_live, url)
        if all(live.get(i) == r for i, r in wanted.items()):
            return
        await trio.sleep(0.05)
    raise AssertionError(f"instances never published {wanted}: {live}")


async def _health_url(server: Any) -> str:
    line = await trio.to_thread.run_sync(server.process.stdout.readline)
    return str(line.split()[3])


def _records(url: str, subject: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        return [(str(k), r) for k, r in conn.execute(
            "SELECT kind, policy_revision FROM audit_records WHERE subject = %s", (subject,)).fetchall()]


@pytest.mark.slow
async def test_check_names_a_mixed_fleet_and_sees_it_converge(pg_url: str, shared_env: dict[str, str]) -> None:
    with place() as a_place, place() as b_place:
        policy_b = b_place.config / "policies" / "default.yaml"
        policy_b.write_text(policy_b.read_text().replace("\nrules:\n", "\nrules:" + EXTRA_RULE, 1))
        rev_a = load_config(a_place.config).policy_revision
        rev_b = load_config(b_place.config).policy_revision
        assert rev_a != rev_b
        id_of = {}
        async with serving(a_place, "--health-port", "0", env=shared_env) as a, \
                serving(b_place, "--health-port", "0", env=shared_env) as b:
            health_a, health_b = await _health_url(a), await _health_url(b)
            id_of = {name: (where.state / "instance-id").read_text().strip()
                     for name, where in (("a", a_place), ("b", b_place))}
            with trio.fail_after(120):
                # Each instance decides under its own policy, and audits its own revision.
                for server, subject in ((a, "ann"), (b, "bob")):
                    async with open_client(server.url, _token(subject)) as client:
                        await client.call_tool("calculator", {"expression": "6*7"})
                for subject, revision in (("ann", rev_a), ("bob", rev_b)):
                    records = await trio.to_thread.run_sync(_records, pg_url, subject)
                    assert "decision" in {kind for kind, _ in records}, records
                    assert {r for _, r in records} == {revision}, (subject, records)
                async with httpx.AsyncClient() as http:
                    for health, revision in ((health_a, rev_a), (health_b, rev_b)):
                        metrics = (await http.get(f"{health}/metrics")).text
                        assert f'sconnect_config_info{{revision="{revision}"}} 1.0\n' in metrics, metrics

                await _wait_for(pg_url, {id_of["a"]: rev_a, id_of["b"]: rev_b})
                mixed = await sconnect("check", "--config", str(a_place.config), "--strict", env=shared_env)
                assert mixed.code == 3, mixed
                assert f"{_short(rev_a)} (same)" in mixed.stdout and f"{_short(rev_b)} (DIFFERENT)" in mixed.stdout
                assert id_of["a"] in mixed.stdout and id_of["b"] in mixed.stdout
                assert "2 different policy revisions" in mixed.stderr, mixed.stderr
                assert f"1 of 2 live instances do not serve this configuration's revision {_short(rev_a)}: " \
                       f"{id_of['b']}" in mixed.stderr, mixed.stderr
                # Without --strict a mixed fleet is a warning: the configuration itself is valid.
                lenient = await sconnect("check", "--config", str(a_place.config), env=shared_env)
                assert lenient.code == 0 and "warning: " in lenient.stderr, lenient

                # The rollout reaches B: its policy becomes A's, a SIGHUP reloads it.
                policy_b.write_text((a_place.config / "policies" / "default.yaml").read_text())
                b.process.send_signal(signal.SIGHUP)
                await _wait_for(pg_url, {id_of["a"]: rev_a, id_of["b"]: rev_a})
                same = await sconnect("check", "--config", str(a_place.config), "--strict", "--json", env=shared_env)
                assert same.code == 0, same
                report = json.loads(same.stdout)
                assert report["fleet_warnings"] == [] and report["config_revision"] == rev_a
                assert {s["instance"]: s["revision"] for s in report["instances"]} == {id_of["a"]: rev_a,
                                                                                       id_of["b"]: rev_a}
    # The reload is audited (once: a SIGHUP and the file poll may both notice it) with both revisions.
    with psycopg.connect(pg_url) as conn:
        reloads = conn.execute("SELECT policy_revision, details FROM audit_records "
                               "WHERE kind = 'config_reload' AND outcome = 'ok'").fetchall()
    assert [(revision, json.loads(details)["previous_revision"]) for revision, details in reloads] == \
        [(rev_a, rev_b)], reloads


async def test_check_with_the_database_down(minimal_config: Path) -> None:
    with trio.fail_after(60):
        down = await sconnect("check", "--config", str(minimal_config), "--database-url",
                              "postgresql://nobody:secret-pw@127.0.0.1:1/nothing")
    assert down.code == 2, down
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("sconnect: cannot connect to PostgreSQL "), down
    assert "Traceback" not in down.stderr and "secret-pw" not in down.stderr
    with trio.fail_after(60):
        skipped = await sconnect("check", "--config", str(minimal_config), "--no-instances",
                                 env={"SCONNECT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing"})
    assert skipped.code == 0 and "live instances" not in skipped.stdout, skipped
    with trio.fail_after(60):
        wrong = await sconnect("check", "--config", str(minimal_config), "--database-url", "mysql://x@y/z")
    assert wrong.code == 2 and "a PostgreSQL URL starts with postgresql://" in wrong.stderr, wrong
    assert "Traceback" not in wrong.stderr


async def test_check_with_no_instance_live(minimal_config: Path, pg_url: str) -> None:
    with trio.fail_after(120):
        for before in ((), ("db", "migrate", "--config", str(minimal_config))):
            if before:
                assert (await sconnect(*before, env={"SCONNECT_DATABASE_URL": pg_url})).code == 0
            done = await sconnect("check", "--config", str(minimal_config), "--strict", "--database-url", pg_url)
            assert done.code == 0, done
            assert "live instances on the database: none" in done.stdout, done.stdout
            assert "warning" not in done.stderr, done.stderr
