"""The proxy as a sandboxed tool sees it: the in-sandbox forwarder (sandbox/_runner.py)
and the bubblewrap wiring (sandbox/_bwrap.py), through ``toolrun.run_tool`` with a real
namespaces sandbox.

- test_a_full_duplex_transfer_passes_whole: the tool sends 3 MiB through a CONNECT
  tunnel to an echo server while reading the echo back (a forwarder that blocked on one
  direction would deadlock); both digests match and the record counts every byte.
- test_many_connections_at_once: 12 tunnels opened together all work (the forwarder
  serves connections concurrently; the proxy's cap is 16).
- test_a_spec_with_a_proxy_socket_is_checked: a proxy socket with network=True, or with
  the process/pool backends, is a SpecError.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import sandbox
from engine.config.model import SandboxNeeds, Tool
from engine.netproxy import EgressRecord, HostsResolver, ProxyConfig
from engine.toolrun import Egress, run_tool

DUPLEX = r"""
import hashlib, json, socket, sys, threading
args = json.load(sys.stdin)
size = args["size"]
conn = socket.create_connection(("127.0.0.1", 3128), timeout=20)
conn.sendall(("CONNECT echo.test:%d HTTP/1.1\r\n\r\n" % args["port"]).encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += conn.recv(1)
sent = hashlib.sha256()
def send():
    block = bytes(range(256)) * 256
    left = size
    while left:
        chunk = block[: min(left, len(block))]
        sent.update(chunk)
        conn.sendall(chunk)
        left -= len(chunk)
    conn.shutdown(socket.SHUT_WR)
writer = threading.Thread(target=send)
writer.start()
got, count = hashlib.sha256(), 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    got.update(data)
    count += len(data)
writer.join()
print(json.dumps({"head": head.decode().split("\r\n")[0], "count": count, "same": got.digest() == sent.digest()}))
"""

MANY = r"""
import json, socket, sys
args = json.load(sys.stdin)
conns = []
for _ in range(args["n"]):
    conn = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    conn.sendall(("CONNECT echo.test:%d HTTP/1.1\r\n\r\n" % args["port"]).encode())
    conns.append(conn)
answers = []
for index, conn in enumerate(conns):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += conn.recv(1)
    conn.sendall(b"hello %d" % index)
    conn.shutdown(socket.SHUT_WR)
    body = b""
    while data := conn.recv(100):
        body += data
    answers.append([head.decode().split(" ")[1], body.decode()])
print(json.dumps(answers))
"""


@pytest.fixture
def state() -> Iterator[Path]:
    problem = sandbox.detect().namespaces_problem()
    if problem is not None:
        pytest.skip(f"namespaces backend unusable here: {problem}")
    root = Path(tempfile.mkdtemp(prefix="sconnect-nettest-"))
    os.chmod(root, 0o711)
    (root / "work").mkdir(mode=0o711)
    os.chmod(root / "work", 0o711)
    yield root
    import shutil

    shutil.rmtree(root, ignore_errors=True)


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


async def run(state: Path, code: str, arguments: dict[str, Any], port: int) -> tuple[Any, list[EgressRecord]]:
    records: list[EgressRecord] = []

    async def record(item: EgressRecord) -> None:
        records.append(item)

    tool = Tool(
        name="probe", description="probe", parameters={"type": "object"}, permission_level=0,
        command=("/usr/bin/python3", "-I", "-S", "-c", code),
        sandbox=SandboxNeeds(network=({"host": "echo.test", "port": port, "addresses": ["127.0.0.1"]},)),
    )  # fmt: skip
    config = ProxyConfig(resolver=HostsResolver({"echo.test": ["127.0.0.1"]}))
    with trio.fail_after(60):
        result = await run_tool(tool, arguments, workspace=state / "ws", work_root=state / "work", subject="a",
                                egress=Egress(record, config))  # fmt: skip
    assert result.status == "ok", result
    return result.output, records


async def test_a_full_duplex_transfer_passes_whole(state: Path, nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    size = 3 * 2**20
    output, records = await run(state, DUPLEX, {"size": size, "port": port}, port)
    assert output == {"head": "HTTP/1.1 200 Connection established", "count": size, "same": True}
    [record] = records
    assert (record.outcome, record.bytes_up, record.bytes_down) == ("allowed", size, size)


async def test_many_connections_at_once(state: Path, nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    output, records = await run(state, MANY, {"n": 12, "port": port}, port)
    assert output == [["200", f"hello {index}"] for index in range(12)]
    assert len(records) == 12 and {r.outcome for r in records} == {"allowed"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"network": True}, "proxy_socket needs network=False"),
        ({"isolation": "process"}, "proxy_socket needs isolation 'namespaces' (not 'process')"),
        ({"isolation": "pool"}, "proxy_socket needs isolation 'namespaces' (not 'pool')"),
        ({"proxy_socket": "relative.sock"}, "proxy_socket: 'relative.sock' is not an absolute path"),
    ],
)
def test_a_spec_with_a_proxy_socket_is_checked(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(sandbox.SpecError, match=re.escape(message)):
        sandbox.Spec(argv=("/bin/true",), **{"proxy_socket": "/tmp/p.sock", **fields})
