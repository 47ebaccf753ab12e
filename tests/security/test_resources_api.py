"""api:// hosts: redirects to another port, and a cache that distinct reads could grow (issue 11, items 20 and 6).

- test_a_redirect_to_another_port_is_refused_unless_allowlisted: two real HTTP
  servers on 127.0.0.1, different ports; the first redirects to the second.  With
  the default allowlist (the base URL's exact origin) and with a bare host entry
  next to the base's (a bare host once matched every port) the read is refused (forbidden) and the second
  server is never asked; allowlisting ``127.0.0.1:<its port>`` lets it through.
- test_host_port_entries_load_and_bad_ones_are_located: ``check`` accepts
  ``host:port`` allowlist entries and reports a malformed one at its line.
- test_many_distinct_reads_keep_the_cache_within_its_bounds: 60 distinct reads of
  300-byte answers against a cache of 8 entries / 1 KiB: the cache never holds more,
  and a recent answer is still served from it (the server is not asked again).
- test_expired_entries_go: with a clock the test advances, an expired answer is
  not served and is swept out by the next store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from engine.config import load_config
from engine.config.converter import converter
from engine.config.model import ApiResource
from engine.errors import ConfigError
from engine.resources import ResourceError, ResourceHosts
from engine.resources.api import ApiHost
from tests.resources.test_resources import http_server, make_config


class Answers(dict[str, Any]):
    """Routes for the test server: every path answers ``body``; ``asked`` counts the requests."""

    def __init__(self, body: bytes, **fixed: Any) -> None:
        super().__init__(fixed)
        self.body = body
        self.asked: list[str] = []

    def get(self, path: str, default: Any = None) -> Any:
        self.asked.append(path)
        return super().get(path) or (200, {"Content-Type": "text/plain"}, self.body)


def api(tmp_path: Path, port: int, **extra: object) -> ResourceHosts:
    config = {
        "scheme": "api", "name": "svc", "description": "d", "base_url": f"http://127.0.0.1:{port}",
        "timeout": "5s", "routes": [{"path": "item/{n}", "target": "/item/{n}"}], **extra,
    }
    return ResourceHosts(make_config(tmp_path, converter.structure(config, ApiResource)), tmp_path)


async def test_a_redirect_to_another_port_is_refused_unless_allowlisted(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    other = Answers(b"from the other port")
    other_port = await http_server(nursery, other)
    base = Answers(b"from the base", **{"/item/away": (302, {"Location": f"http://127.0.0.1:{other_port}/x"}, b"")})
    base_port = await http_server(nursery, base)
    with trio.fail_after(20):
        bare_host = api(tmp_path, base_port, allowed_hosts=[f"127.0.0.1:{base_port}", "127.0.0.1"])
        for hosts in (api(tmp_path, base_port), bare_host):
            with pytest.raises(ResourceError) as caught:
                await hosts.read("api://svc/item/away")
            assert caught.value.code == "forbidden" and f"127.0.0.1:{other_port}" in caught.value.message
        assert other.asked == []
        allowed = api(tmp_path, base_port, allowed_hosts=[f"127.0.0.1:{base_port}", f"127.0.0.1:{other_port}"])
        assert (await allowed.read("api://svc/item/away")).data == "from the other port"
        assert other.asked == ["/x"]


API_YAML = """\
scheme: api
name: svc
description: A service on a pinned port.
base_url: http://127.0.0.1:8080
allowed_hosts:
  - 127.0.0.1:8080
  - {extra}
routes:
  - path: item/{{n}}
    target: /item/{{n}}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("https://api.example.com:8443", None),
        ("api.example.com/path", "is not a host, host:port or scheme://host[:port]"),
        ("api.example.com:99999", "Port out of range"),
        ("ftp://api.example.com", "only http and https origins"),
    ],
)
def test_host_port_entries_load_and_bad_ones_are_located(tmp_path: Path, extra: str, message: str | None) -> None:
    (tmp_path / "resources.d").mkdir()
    (tmp_path / "resources.d" / "svc.yaml").write_text(API_YAML.format(extra=extra))
    if message is None:
        assert "api://svc" in load_config(tmp_path).resources
        return
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("resources.d/svc.yaml", 7, "allowed_hosts[1]")
    assert message in problem.message


async def test_many_distinct_reads_keep_the_cache_within_its_bounds(nursery: trio.Nursery, tmp_path: Path) -> None:
    answers = Answers(b"y" * 300)
    port = await http_server(nursery, answers)
    hosts = api(tmp_path, port, cache="1h", cache_entries=8, cache_size="1KiB")
    host = hosts.hosts["api://svc"]
    assert isinstance(host, ApiHost)
    with trio.fail_after(30):
        for n in range(60):
            await hosts.read(f"api://svc/item/{n}")
            assert len(host.cache) <= 8 and host.cache.size_bytes <= 1024
        assert len(host.cache) == 3 and host.cache.size_bytes == 900  # 1 KiB holds three 300-byte answers
        asked = len(answers.asked)
        await hosts.read("api://svc/item/59")
        assert len(answers.asked) == asked  # served from the cache
        await hosts.read("api://svc/item/0")
        assert len(answers.asked) == asked + 1  # evicted long ago: asked again


async def test_expired_entries_go(nursery: trio.Nursery, tmp_path: Path) -> None:
    answers = Answers(b"fresh")
    port = await http_server(nursery, answers)
    now = [1000.0]
    config = converter.structure({
        "scheme": "api", "name": "svc", "description": "d", "base_url": f"http://127.0.0.1:{port}",
        "timeout": "5s", "cache": "10s", "routes": [{"path": "item/{n}", "target": "/item/{n}"}],
    }, ApiResource)
    host = ApiHost(config, clock=lambda: now[0])
    from engine.resources import parse_uri

    with trio.fail_after(20):
        for n in range(5):
            await host.read(parse_uri(f"api://svc/item/{n}"))
        assert len(host.cache) == 5
        now[0] += 11
        assert host.cache.get(f"http://127.0.0.1:{port}/item/1") is None  # expired: not served
        await host.read(parse_uri("api://svc/item/new"))
        assert len(host.cache) == 1 and host.cache.size_bytes == len(b"fresh")  # the store swept the rest
