"""``sconnect serve`` on PostgreSQL, as real processes: two instances on one database share
sessions (a session started on A resumes on B, history included); a database that is down,
a wrong password, and a schema newer than the code each stop the start with exit 2 and one
clear line, never a traceback and never the password."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import jwt
import psycopg
import pytest
import trio

from engine.client import ServerError, open_client
from engine.protocol import AgentAction, ToolCall
from engine.store._pg import MIGRATIONS
from tests.pg.cluster import PASSWORD, Cluster
from tests.security.cliserver import SECRET, place, refused_start, serving

LATEST = MIGRATIONS[-1].version  # the store's newest migration (features append theirs)


def _token(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "roles": ["user"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def test_a_session_started_on_one_instance_resumes_on_another(pg_url: str, shared_env: dict[str, str]) -> None:
    env = shared_env
    with place() as a_place, place() as b_place:
        async with serving(a_place, env=env) as a, serving(b_place, env=env) as b:
            with trio.fail_after(30):
                async with open_client(a.url, _token()) as client:
                    sid = (await client.start_session("assistant")).session_id
                    await client.converse(sid, "what is 6*7")
                async with open_client(b.url, _token()) as client:
                    state = await client.resume_session(sid, "assistant")
                    assert (state.session_id, str(state.state)) == (sid, "active")
                    assert (await client.converse(sid, "what is 2*3")).response.content == "2*3 = 6"
                async with open_client(b.url, _token("mallory")) as intruder:
                    try:
                        await intruder.resume_session(sid, "assistant")
                    except Exception as exc:  # noqa: BLE001 - the code is what matters
                        assert getattr(exc, "code", None) == "forbidden"
                    else:
                        raise AssertionError("another subject resumed alice's session")
    with psycopg.connect(pg_url) as conn:
        roles = [r[0] for r in conn.execute(
            "SELECT message::json->>'role' FROM messages WHERE session_id = %s ORDER BY seq", (sid,))]
    assert roles == ["user", "assistant", "tool", "assistant"] * 2


async def test_database_down_at_start_exits_2(pg_url: str) -> None:
    with trio.socket.socket() as sock:  # bound, never listening: nothing answers there
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with place() as where:
            done = await refused_start(where, env={
                "SCONNECT_DATABASE_URL": f"postgresql://sconnect_test:{PASSWORD}@127.0.0.1:{port}/x"})
    assert done.code == 2, done.stderr
    assert f"cannot connect to PostgreSQL sconnect_test@127.0.0.1:{port}/x" in done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr


async def test_wrong_password_exits_2_without_the_password(pg_url: str) -> None:
    with place() as where:
        done = await refused_start(where, env={"SCONNECT_DATABASE_URL": pg_url.replace(PASSWORD, "guess-123")})
    assert done.code == 2, done.stderr
    assert "password authentication failed" in done.stderr
    assert "guess-123" not in done.stderr and "Traceback" not in done.stderr


async def test_a_schema_newer_than_the_code_refuses_to_start(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (component TEXT, version INTEGER, description TEXT, "
                     "applied_at DOUBLE PRECISION, PRIMARY KEY (component, version))")
        conn.execute("INSERT INTO schema_migrations VALUES ('store', 1, 'x', 0), ('store', %s, 'future', 0)",
                     (LATEST + 5,))
    with place() as where:
        done = await refused_start(where, env={"SCONNECT_DATABASE_URL": pg_url})
    assert done.code == 2, done.stderr
    assert f"schema in the database is at version {LATEST + 5}, newer than this program's ({LATEST})" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_url_that_is_not_postgresql_is_refused(pg_url: str) -> None:
    with place() as where:
        done = await refused_start(where, env={"SCONNECT_DATABASE_URL": "mysql://x@y/z"})
    assert done.code == 2 and "starts with postgresql://" in done.stderr, done.stderr


@pytest.mark.slow
async def test_database_going_away_while_serving(own_cluster: Cluster) -> None:
    """The database stops under a running server: the call fails (the server stays up),
    /readyz says the database is unavailable (so a balancer drains this instance), and
    once the database is back the server serves again without a restart."""
    url = own_cluster.create_database()
    with place() as where:
        async with serving(where, "--health-port", "0", env={"SCONNECT_DATABASE_URL": url}) as server:
            assert server.process.stdout is not None
            line = await trio.to_thread.run_sync(server.process.stdout.readline)
            health = line.split()[3]
            config_line = await trio.to_thread.run_sync(server.process.stdout.readline)
            assert "  database: sconnect_test@127.0.0.1:" in config_line and PASSWORD not in config_line
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{health}/readyz")).status_code == 200
                with trio.fail_after(60):
                    async with open_client(server.url, _token()) as client, \
                            open_client(server.url, _token()) as direct:
                        await trio.to_thread.run_sync(own_cluster.pg_ctl, "stop", "-m", "fast")
                        refusals: dict[str, ServerError] = {}

                        async def refused(name: str, request: Callable[[], Awaitable[object]]) -> None:
                            with pytest.raises(ServerError) as caught:
                                await request()
                            refusals[name] = caught.value

                        # Each waits for a database connection in vain: side by side, on
                        # two connections, they wait once.
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(refused, "session", partial(client.start_session, "assistant"))
                            # A direct call: its decision cannot be audited, so it is refused the same way.
                            nursery.start_soon(refused, "call",
                                               partial(direct.call_tool, "calculator", {"expression": "1+1"}))
                        assert {name: error.code for name, error in refusals.items()} == \
                            {"session": "unavailable", "call": "unavailable"}, refusals
                        ready = await http.get(f"{health}/readyz")
                        assert ready.status_code == 503 and "database" in ready.text, ready.text
                        assert server.process.poll() is None
                        await trio.to_thread.run_sync(own_cluster.pg_ctl, "start")
                        # Ready again without traffic: the server re-tries the database itself.
                        for _ in range(400):  # bounded (and fail_after above): the pool reconnects with a back-off
                            if (await http.get(f"{health}/readyz")).status_code == 200:
                                break
                            await trio.sleep(0.1)
                        assert (await http.get(f"{health}/readyz")).status_code == 200
                        sid = (await client.start_session("assistant")).session_id
                        assert (await client.converse(sid, "what is 2*3")).response.content == "2*3 = 6"


async def test_an_instance_killed_mid_session_loses_nothing(pg_url: str, shared_env: dict[str, str]) -> None:
    """SIGKILL one instance right after a turn: the session, its history and its state
    resume on the other, and the conversation continues there."""
    env = shared_env
    with place() as a_place, place() as b_place:
        async with serving(b_place, env=env) as b:
            a_cm = serving(a_place, env=env)
            a = await a_cm.__aenter__()
            try:
                with trio.fail_after(30):
                    async with open_client(a.url, _token()) as client:
                        sid = (await client.start_session("assistant")).session_id
                        await client.converse(sid, "what is 6*7")
                        a.process.kill()
                        await trio.to_thread.run_sync(a.process.wait)
            finally:
                a.process.kill()
                with contextlib.suppress(AssertionError):  # its exit status is SIGKILL's, by design
                    await a_cm.__aexit__(None, None, None)
            with trio.fail_after(30):
                async with open_client(b.url, _token()) as client:
                    state = await client.resume_session(sid, "assistant")
                    assert str(state.state) == "active"
                    assert (await client.converse(sid, "what is 2*3")).response.content == "2*3 = 6"
    with psycopg.connect(pg_url) as conn:
        count = conn.execute("SELECT count(*) FROM messages WHERE session_id = %s", (sid,)).fetchone()
    assert count == (8,)


async def test_a_restarted_instance_cancels_its_own_orphans_only(pg_url: str, shared_env: dict[str, str]) -> None:
    """A approval waits on A and one on B; A is SIGKILLed and started again on the same
    state directory: its orphan is cancelled at start, B's live one stays pending."""
    env = shared_env

    async def ask(url: str) -> str:
        async with open_client(url, _token()) as client:
            await client.send(ToolCall(id="ask", name="read_file", arguments={"path": "x.txt"}))
            return str((await client.next_event_of(AgentAction)).action_id)

    with place() as a_place, place() as b_place:
        async with serving(b_place, env=env) as b:
            with trio.fail_after(60):
                a_cm = serving(a_place, env=env)
                a = await a_cm.__aenter__()
                try:
                    orphan = await ask(a.url)
                    a.process.kill()
                    await trio.to_thread.run_sync(a.process.wait)
                finally:
                    with contextlib.suppress(AssertionError):  # its exit status is SIGKILL's, by design
                        await a_cm.__aexit__(None, None, None)
                async with open_client(b.url, _token()) as client:
                    await client.send(ToolCall(id="ask", name="read_file", arguments={"path": "y.txt"}))
                    # B may first show alice the orphan (its copy stays until A's "finished"
                    # arrives, which A may not have sent before it was killed): take B's own.
                    while (action := await client.next_event_of(AgentAction)).arguments.get("path") != "y.txt":
                        assert action.action_id == orphan, action
                    live = str(action.action_id)
                    async with serving(a_place, env=env):
                        with psycopg.connect(pg_url) as conn:
                            status = dict(conn.execute(
                                "SELECT action_id, status FROM pending_actions WHERE action_id IN (%s, %s)",
                                (orphan, live)).fetchall())
    assert status == {orphan: "cancelled", live: "pending"}
