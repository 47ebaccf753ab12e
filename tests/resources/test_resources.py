"""Each scheme against real things: files in tmp_path, a real SQLite file, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from engine.config.converter import converter
from engine.config.model import ApiResource, Config, DbResource, FileResource
from engine.resources import ResourceError, ResourceHosts, parse_uri


def make_config(root: Path, *resources: object) -> Config:
    return Config(
        root=str(root), agents={}, tools={},
        resources={f"{r.scheme}://{r.name}": r for r in resources},  # type: ignore[attr-defined]
        policies=(),
    )


@pytest.fixture
def files(tmp_path: Path) -> ResourceHosts:
    root = tmp_path / "root"
    (root / "documents" / "deep").mkdir(parents=True)
    (root / "secrets").mkdir()
    (root / "documents" / "report.md").write_text("# Report\nall good\n")
    (root / "documents" / "deep" / "notes.txt").write_text("deep notes")
    (root / "documents" / "big.txt").write_text("x" * 5000)
    (root / "documents" / "logo.bin").write_bytes(bytes(range(256)))
    (root / "secrets" / "key.txt").write_text("hunter2")
    (tmp_path / "outside.txt").write_text("outside the root")
    os.symlink(tmp_path / "outside.txt", root / "documents" / "escape.txt")
    os.symlink(root / "documents" / "report.md", root / "documents" / "inside-link.md")
    os.symlink("/etc", root / "documents" / "etcdir")
    local = converter.structure(
        {"scheme": "file", "name": "local", "description": "d", "root": "root", "globs": ["documents/**"],
         "max_size": "1KiB"},
        FileResource,
    )
    strict = converter.structure(
        {"scheme": "file", "name": "strict", "description": "d", "root": "root", "globs": ["documents/*.txt"],
         "max_size": "1KiB", "on_oversize": "refuse"},
        FileResource,
    )
    return ResourceHosts(make_config(tmp_path, local, strict), tmp_path / "state")


async def refused(read: Callable[[], Awaitable[object]]) -> ResourceError:
    with pytest.raises(ResourceError) as caught:
        await read()
    return caught.value


async def test_file_reads(files: ResourceHosts) -> None:
    report = await files.read("file://local/documents/report.md")
    assert (report.data, report.mime_type, report.truncated) == ("# Report\nall good\n", "text/markdown", False)
    assert (await files.read("file://local/documents/deep/notes.txt")).data == "deep notes"
    big = await files.read("file://local/documents/big.txt")
    assert big.truncated and len(big.data) == 1024
    binary = await files.read("file://local/documents/logo.bin")
    assert binary.data == bytes(range(256))


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("file://local/documents/../secrets/key.txt", "invalid_arguments"),
        ("file://local/documents/%2e%2e/secrets/key.txt", "invalid_arguments"),
        ("file://local/documents%2Fsecrets", "invalid_arguments"),
        ("file://local//etc/passwd", "invalid_arguments"),
        ("file://local/documents/report.md\x00.txt", "invalid_arguments"),
        ("file://local/documents\\report.md", "invalid_arguments"),
        ("file://local/documents/report.md?x=1", "invalid_arguments"),
        ("/etc/passwd", "invalid_arguments"),
        ("gopher://local/documents/report.md", "not_found"),
        ("file://nowhere/documents/report.md", "not_found"),
        ("file://local/secrets/key.txt", "forbidden"),
        ("file://local/documents/escape.txt", "forbidden"),
        ("file://local/documents/inside-link.md", "forbidden"),
        ("file://local/documents/missing.txt", "not_found"),
        ("file://local/documents/etcdir/passwd", "forbidden"),
        ("file://local/documents/deep", "forbidden"),
        ("file://strict/documents/big.txt", "too_large"),
        ("file://strict/documents/deep/notes.txt", "forbidden"),
    ],
)
async def test_file_refusals(files: ResourceHosts, uri: str, code: str) -> None:
    assert (await refused(lambda: files.read(uri))).code == code


def test_uri_parsing() -> None:
    parsed = parse_uri("db://users/profile/42")
    assert (parsed.scheme, parsed.host, parsed.segments, str(parsed)) == ("db", "users", ("profile", "42"), "db://users/profile/42")
    assert parse_uri("file://local/a%20b.txt").segments == ("a b.txt",)


@pytest.fixture
def database(tmp_path: Path) -> ResourceHosts:
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "people.sqlite") as conn:
        conn.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, team TEXT);"
            + "".join(f"INSERT INTO users VALUES ({i}, 'user{i}', 'team{i % 2}');" for i in range(1, 8))
        )
    conn.close()
    people = converter.structure(
        {"scheme": "db", "name": "people", "description": "d", "database": "people.sqlite", "max_rows": 3,
         "queries": [
             {"path": "profile/{id}", "sql": "SELECT id, name FROM users WHERE id = :id", "params": {"id": "integer"}},
             {"path": "team/{team}", "sql": "SELECT id FROM users WHERE team = :team ORDER BY id"},
         ]},
        DbResource,
    )
    return ResourceHosts(make_config(tmp_path, people), state)


async def test_db_reads(database: ResourceHosts) -> None:
    import json

    profile = await database.read("db://people/profile/3")
    assert json.loads(profile.data) == [{"id": 3, "name": "user3"}] and profile.mime_type == "application/json"
    team = await database.read("db://people/team/team1")
    assert json.loads(team.data) == [{"id": 1}, {"id": 3}, {"id": 5}] and team.truncated
    # A value is bound, never interpolated: an injection attempt is just a team name that matches nothing.
    injected = await database.read("db://people/team/x' OR '1'='1")
    assert json.loads(injected.data) == []


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("db://people/profile/abc", "invalid_arguments"),
        ("db://people/profile/1; DROP TABLE users", "invalid_arguments"),
        ("db://people/nothing/1", "not_found"),
        ("db://people/profile", "not_found"),
        ("db://other/profile/1", "not_found"),
    ],
)
async def test_db_refusals(database: ResourceHosts, uri: str, code: str) -> None:
    assert (await refused(lambda: database.read(uri))).code == code


async def test_db_seeded_on_first_read(tmp_path: Path) -> None:
    (tmp_path / "seed.sql").write_text("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('seeded');")
    host = converter.structure(
        {"scheme": "db", "name": "s", "description": "d", "database": "s.sqlite", "seed": "seed.sql",
         "queries": [{"path": "all", "sql": "SELECT v FROM t"}]},
        DbResource,
    )
    (tmp_path / "state").mkdir()
    hosts = ResourceHosts(make_config(tmp_path, host), tmp_path / "state")
    assert (await hosts.read("db://s/all")).data == '[{"v": "seeded"}]'


# --- api:// against a real HTTP server on 127.0.0.1 -----------------------------------


async def http_server(nursery: trio.Nursery, routes: dict[str, tuple[int, dict[str, str], bytes | None]]) -> int:
    """A tiny HTTP/1.1 server: path -> (status, headers, body); body None never answers."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ")[1].decode()
        status, headers, body = routes.get(path, (404, {}, b"no"))
        if body is None:
            await trio.sleep_forever()
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        await stream.send_all(head.encode() + b"\r\n" + body)
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def api_host(tmp_path: Path, port: int, **extra: object) -> ResourceHosts:
    config = {
        "scheme": "api", "name": "weather", "description": "d", "base_url": f"http://127.0.0.1:{port}",
        "allowed_hosts": [f"127.0.0.1:{port}"], "timeout": "500ms", "max_size": "64B",
        "routes": [{"path": "current/{city}", "target": "/current/{city}?format=j1"}], **extra,
    }
    return ResourceHosts(make_config(tmp_path, converter.structure(config, ApiResource)), tmp_path)


async def test_api_reads_and_refusals(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await http_server(nursery, {
        "/current/Berlin?format=j1": (200, {"Content-Type": "application/json"}, b'{"temp": 3}'),
        "/current/Paris%20Nord?format=j1": (200, {"Content-Type": "text/plain"}, b"ok paris"),
        "/current/Big?format=j1": (200, {}, b"y" * 500),
        "/current/Away?format=j1": (302, {"Location": "http://example.com/"}, b""),
        "/current/Hop?format=j1": (302, {"Location": "/current/Berlin?format=j1"}, b""),
        "/current/Slow?format=j1": (200, {}, None),
        "/current/Broken?format=j1": (500, {}, b"boom"),
    })
    hosts = api_host(tmp_path, port)
    with trio.fail_after(10):
        berlin = await hosts.read("api://weather/current/Berlin")
        assert (berlin.data, berlin.mime_type) == ('{"temp": 3}', "application/json")
        assert (await hosts.read("api://weather/current/Paris%20Nord")).data == "ok paris"
        big = await hosts.read("api://weather/current/Big")
        assert big.truncated and len(big.data) == 64
        assert (await hosts.read("api://weather/current/Hop")).data == '{"temp": 3}'
        assert (await refused(lambda: hosts.read("api://weather/current/Away"))).code == "forbidden"
        assert (await refused(lambda: hosts.read("api://weather/current/Slow"))).code == "timeout"
        assert (await refused(lambda: hosts.read("api://weather/current/Broken"))).code == "unavailable"
        assert (await refused(lambda: hosts.read("api://weather/forecast/Berlin"))).code == "not_found"
        strict = api_host(tmp_path, port, on_oversize="refuse")
        assert (await refused(lambda: strict.read("api://weather/current/Big"))).code == "too_large"
        off_list = api_host(tmp_path, port, allowed_hosts=[f"127.0.0.1:{port}"], base_url=f"http://localhost:{port}")
        assert (await refused(lambda: off_list.read("api://weather/current/Berlin"))).code == "forbidden"


async def test_api_headers_come_from_the_environment(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await http_server(nursery, {"/current/X?format=j1": (200, {}, b"fine")})
    hosts = api_host(tmp_path, port, headers_from_env={"Authorization": "WEATHER_TOKEN"})
    monkeypatch.delenv("WEATHER_TOKEN", raising=False)
    with trio.fail_after(5):
        error = await refused(lambda: hosts.read("api://weather/current/X"))
        assert error.code == "unavailable" and "WEATHER_TOKEN" in error.message
        monkeypatch.setenv("WEATHER_TOKEN", "Bearer abc")
        assert (await hosts.read("api://weather/current/X")).data == "fine"


def test_a_file_host_may_not_serve_the_state_directory(tmp_path: Path) -> None:
    from engine.errors import ConfigError

    everything = converter.structure(
        {"scheme": "file", "name": "everything", "description": "d", "root": "/"}, FileResource
    )
    with pytest.raises(ConfigError, match="holds the server's state directory"):
        ResourceHosts(make_config(tmp_path, everything), tmp_path / "state")
