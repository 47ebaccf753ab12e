"""Network by destination (issue 18): a tool whose ``sandbox.network`` is a list reaches
those destinations through the engine's egress proxy, and nothing else.

A real server runs the shipped ``http_get`` (its list pointed at stand-in hosts) and a
probe tool in real bubblewrap sandboxes; HTTP servers on 127.0.0.1 / 127.0.0.2 stand in
for hosts, and the proxy's own hosts map (ServerSettings.egress) gives them names, with
127.0.0.2 treated as a public address. Every test reads the audit back.

- test_an_allowed_name_works: http_get of http://allowed.test:P/hello returns the page;
  the egress record names the tool, the call, the subject, host, port, address and bytes,
  and /metrics counts the connection and its bytes.
- test_another_name_is_refused: http_get of evil.test (mapped to the same server) fails
  with PermissionError; the server sees nothing; the audit shows the refusal.
- test_a_raw_ip_is_refused: http_get of http://127.0.0.1:P/ (the allowed server's own
  address) is refused: an address must be listed itself.
- test_a_redirect_to_a_refused_host_fails: the allowed host answers 302 to evil.test; the
  hop is refused by the proxy; the audit shows the allowed first hop and the refused second.
- test_dns_rebinding_to_loopback_fails: rebind.test resolves to the "public" 127.0.0.2
  first, then to 127.0.0.1: the first call reaches the public stand-in (the address that
  was checked), the second is refused; the server on 127.0.0.1 is never reached.
- test_bypassing_the_proxy_fails: the probe connects directly to the allowed server, to
  the engine's WebSocket and health ports and to a public address (no route: its network
  namespace has only loopback), asks the proxy for the engine's ports (refused), and
  speaks garbage to the proxy's socket (a 400: there is no admin surface); the stand-in
  servers see nothing, the proxy environment is set, and each proxy refusal is audited.
- test_an_agent_turn_fetches_through_the_proxy_and_is_audited: the assistant's "fetch
  URL" rule runs http_get in a turn; the egress record names the agent, the session and
  the action.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import yaml

import sandbox
from engine.audit import query
from engine.client import open_client
from engine.netproxy import HostsResolver, ProxyConfig
from tests.engine.conftest import RunningServer
from tests.engine.test_server_health import http_get
from tests.netproxy.httpd import Site, pair_on_one_port, serve_http

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

PROBE = r"""
import json, os, socket, sys
args = json.load(sys.stdin)
out = {"direct": [], "connect": [], "env": {k: os.environ.get(k) for k in
       ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}}
for host, port in args.get("direct", []):
    try:
        socket.create_connection((host, port), timeout=5).close()
        out["direct"].append("connected")
    except OSError as exc:
        out["direct"].append(type(exc).__name__)
for host, port in args.get("connect", []):
    with socket.create_connection(("127.0.0.1", 3128), timeout=5) as conn:
        conn.sendall(("CONNECT %s:%d HTTP/1.1\r\n\r\n" % (host, port)).encode())
        out["connect"].append(conn.recv(200).split(b"\r\n")[0].decode())
if args.get("unix"):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect("/run/sconnect/proxy.sock")
        conn.sendall(args["unix"].encode())
        out["unix"] = conn.recv(200).split(b"\r\n")[0].decode()
print(json.dumps(out))
"""


@attrs.frozen
class Net:
    server: RunningServer
    allowed: Site  # 127.0.0.1:P, named allowed.test (and evil.test)
    public: Site  # 127.0.0.2:Q, "public", where rebind.test points first
    victim: Site  # 127.0.0.1:Q, where rebind.test points next


ROUTES = {
    "/hello": (200, {"Content-Type": "text/plain"}, b"hello from allowed.test"),
    "/public": (200, {"Content-Type": "text/plain"}, b"hello from a public host"),
}


@pytest.fixture
async def net(nursery: trio.Nursery, config_dir: Path, start_server: Callable[..., Any]) -> AsyncIterator[Net]:
    problem = sandbox.detect().namespaces_problem()
    if problem is not None:
        pytest.skip(f"namespaces backend unusable here: {problem}")
    routes = dict(ROUTES)
    allowed_site = await serve_http(nursery, "127.0.0.1", routes)
    # The redirect names the site's own port, known once it listens (routes are read per request).
    routes["/to-evil"] = (302, {"Location": f"http://evil.test:{allowed_site.port}/hello"}, b"")
    public, victim = await pair_on_one_port(nursery, "127.0.0.2", "127.0.0.1", ROUTES)
    http_get = config_dir / "tools.d" / "http_get.yaml"
    data = yaml.safe_load(http_get.read_text())
    data["sandbox"]["network"] = [
        {"host": "allowed.test", "port": allowed_site.port, "addresses": ["127.0.0.1"]},
        f"rebind.test:{public.port}",
    ]
    http_get.write_text(yaml.safe_dump(data))
    probe = {
        "name": "net_probe", "description": "Network probe (test tool).", "permission_level": 0,
        "command": ["/usr/bin/python3", "-I", "-S", "-c", PROBE], "parameters": {"type": "object"},
        "sandbox": {"timeout": "30s", "network": [
            {"host": "allowed.test", "port": allowed_site.port, "addresses": ["127.0.0.1"]}]},
    }  # fmt: skip
    (config_dir / "tools.d" / "net_probe.yaml").write_text(yaml.safe_dump(probe))
    egress = ProxyConfig(
        resolver=HostsResolver({
            "allowed.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"],
            "rebind.test": [["127.0.0.2"], ["127.0.0.1"]],
        }),  # fmt: skip
        public_ranges=(ipaddress.ip_network("127.0.0.2/32"),),
    )
    server = await start_server(config_dir, egress=egress, health_port=0)
    yield Net(server, allowed_site, public, victim)


async def call(net: Net, tool: str, arguments: dict[str, Any], sub: str = "alice") -> Any:
    with trio.fail_after(60):
        async with open_client(net.server.url, net.server.token(sub)) as client:
            return await client.call_tool(tool, arguments, approve=lambda action: True)


def egress(net: Net) -> list[tuple[str, dict[str, Any]]]:
    records = query(net.server.settings.state_dir, kind="egress")
    return [(str(r.outcome), json.loads(r.details)) for r in records]


async def test_an_allowed_name_works(net: Net) -> None:
    url = f"http://allowed.test:{net.allowed.port}/hello"
    result = await call(net, "http_get", {"url": url})
    assert str(result.status) == "ok", result.output
    assert result.output["status"] == 200 and result.output["body"] == "hello from allowed.test"
    assert net.allowed.seen == [("GET", "/hello", f"allowed.test:{net.allowed.port}")]
    [record] = query(net.server.settings.state_dir, kind="egress")
    details = json.loads(record.details)
    assert (record.subject, record.target, record.action, record.outcome) == ("alice", "http_get", "tool.egress",
                                                                              "allowed")  # fmt: skip
    assert details["call"] == result.action_id
    assert (details["host"], details["port"], details["address"]) == ("allowed.test", net.allowed.port, "127.0.0.1")
    assert details["bytes_up"] > 0 and details["bytes_down"] > len(b"hello from allowed.test")
    # ... and a metric.
    _, metrics = await http_get(str(net.server.health_url), "/metrics")
    assert 'sconnect_egress_connections_total{tool="http_get",outcome="allowed"} 1' in metrics
    assert f'sconnect_egress_bytes_total{{tool="http_get",direction="down"}} {details["bytes_down"]}' in metrics


async def test_another_name_is_refused(net: Net) -> None:
    result = await call(net, "http_get", {"url": f"http://evil.test:{net.allowed.port}/hello"})
    assert str(result.status) == "error"
    assert "PermissionError: the egress proxy refused evil.test" in result.output["stderr"]
    assert net.allowed.connections == 0
    [(outcome, details)] = egress(net)
    assert outcome == "refused" and details["host"] == "evil.test" and details["address"] is None
    assert details["reason"] == "evil.test is not in the tool's network list"


async def test_a_raw_ip_is_refused(net: Net) -> None:
    result = await call(net, "http_get", {"url": f"http://127.0.0.1:{net.allowed.port}/hello"})
    assert str(result.status) == "error" and "PermissionError" in result.output["stderr"]
    assert net.allowed.connections == 0
    [(outcome, details)] = egress(net)
    assert (outcome, details["host"], details["port"]) == ("refused", "127.0.0.1", net.allowed.port)


async def test_a_redirect_to_a_refused_host_fails(net: Net) -> None:
    result = await call(net, "http_get", {"url": f"http://allowed.test:{net.allowed.port}/to-evil"})
    assert str(result.status) == "error"
    assert "the egress proxy refused evil.test" in result.output["stderr"]
    assert [path for _, path, _ in net.allowed.seen] == ["/to-evil"]
    assert [(outcome, details["host"]) for outcome, details in egress(net)] == [
        ("allowed", "allowed.test"), ("refused", "evil.test"),
    ]  # fmt: skip


async def test_dns_rebinding_to_loopback_fails(net: Net) -> None:
    url = f"http://rebind.test:{net.public.port}/public"
    first = await call(net, "http_get", {"url": url})
    assert str(first.status) == "ok" and first.output["body"] == "hello from a public host"
    second = await call(net, "http_get", {"url": url})
    assert str(second.status) == "error" and "the egress proxy refused rebind.test" in second.output["stderr"]
    assert net.public.connections == 1 and net.victim.connections == 0
    records = egress(net)
    assert [(outcome, details["address"]) for outcome, details in records] == [("allowed", "127.0.0.2"),
                                                                               ("refused", None)]  # fmt: skip
    assert "resolves to 127.0.0.1: loopback, link-local and private addresses need an entry" in records[1][1]["reason"]


async def test_bypassing_the_proxy_fails(net: Net) -> None:
    ws_port = int(net.server.url.rsplit(":", 1)[1].split("/")[0])
    health_port = int(str(net.server.health_url).rsplit(":", 1)[1])
    arguments = {
        "direct": [["127.0.0.1", net.allowed.port], ["127.0.0.1", ws_port], ["127.0.0.2", net.public.port],
                   ["93.184.216.34", 80]],
        "connect": [["127.0.0.1", ws_port], ["localhost", health_port], ["allowed.test", ws_port]],
        "unix": "GET /admin HTTP/1.1\r\n\r\n",
    }  # fmt: skip
    result = await call(net, "net_probe", arguments)
    assert str(result.status) == "ok", result
    output = result.output
    # No route out of the sandbox's own network namespace (its loopback has only the forwarder).
    assert output["direct"] == ["ConnectionRefusedError", "ConnectionRefusedError", "ConnectionRefusedError",
                                "OSError"]  # fmt: skip
    assert [line.split(" ")[1] for line in output["connect"]] == ["403", "403", "403"]
    assert output["unix"] == "HTTP/1.1 400 Bad Request"
    assert set(output["env"].values()) == {"http://127.0.0.1:3128"}
    assert net.allowed.connections == net.public.connections == net.victim.connections == 0
    assert [(outcome, details["host"], details["port"]) for outcome, details in egress(net)] == [
        ("refused", "127.0.0.1", ws_port), ("refused", "localhost", health_port), ("refused", "allowed.test", ws_port),
        ("refused", "", 0),
    ]  # fmt: skip


async def test_an_agent_turn_fetches_through_the_proxy_and_is_audited(net: Net) -> None:
    url = f"http://allowed.test:{net.allowed.port}/hello"
    with trio.fail_after(60):
        async with open_client(net.server.url, net.server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, f"fetch {url}", approve=lambda action: True)
    assert "hello from allowed.test" in turn.response.content
    [record] = query(net.server.settings.state_dir, kind="egress")
    assert (record.agent, record.session_id, record.outcome) == ("assistant", sid, "allowed")
    assert json.loads(record.details)["call"] == turn.actions[0].action_id
