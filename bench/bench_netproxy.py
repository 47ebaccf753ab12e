"""What the egress proxy costs (issue 18): per connection and per byte.

Runs in one process with a loopback HTTP/echo server standing in for the destination:

- ``direct``: a TCP connection + small HTTP request/response to the server itself;
- ``proxied``: the same through the proxy's Unix socket (CONNECT, own resolution via the
  hosts map, check, connect, relay), i.e. what a tool pays per connection on top;
- ``throughput``: MiB/s of one tunnel echoing ``--mib`` MiB (both directions counted once);
- ``sandboxed``: wall time of one namespaces-backend call that opens one tunnel, against
  the same call with ``network: false`` (the forwarder's start-up is the difference).

    python bench/bench_netproxy.py [--samples 500] [--mib 64] [--calls 20]

Prints medians and p99 in milliseconds; numbers vary ±20 % on a loaded machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from engine.config.model import SandboxNeeds, Tool
from engine.netproxy import Allowlist, EgressRecord, HostsResolver, ProxyConfig, open_call_proxy
from engine.toolrun import Egress, run_tool

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def handler(stream: trio.SocketStream) -> None:
    async with stream:
        data = await stream.receive_some(65536)
        if data.startswith(b"ECHO"):
            while data:
                await stream.send_all(data)
                data = await stream.receive_some(65536)
            return
        await stream.send_all(ANSWER)


def summary(name: str, samples: list[float]) -> None:
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    median = statistics.median(samples) * 1000
    print(f"{name:<28} median {median:7.3f} ms   p99 {p99 * 1000:7.3f} ms   n={len(samples)}")


async def read_all(stream: trio.abc.Stream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def count_all(stream: trio.abc.Stream) -> int:
    count = 0
    while chunk := await stream.receive_some(65536):
        count += len(chunk)
    return count


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        direct: list[float] = []
        for _ in range(args.samples):
            began = time.perf_counter()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(REQUEST)
                await read_all(stream)
            direct.append(time.perf_counter() - began)
        summary("direct", direct)

        records: list[EgressRecord] = []

        async def record(item: EgressRecord) -> None:
            records.append(item)

        allow = Allowlist.parse([{"host": "bench.test", "port": port, "addresses": ["127.0.0.1"]}])
        config = ProxyConfig(resolver=HostsResolver({"bench.test": ["127.0.0.1"]}))
        async with open_call_proxy(allow, record, config=config) as path:
            proxied: list[float] = []
            connect = f"CONNECT bench.test:{port} HTTP/1.1\r\n\r\n".encode()
            for _ in range(args.samples):
                began = time.perf_counter()
                stream = await trio.open_unix_socket(path)
                async with stream:
                    await stream.send_all(connect + REQUEST)
                    await read_all(stream)
                proxied.append(time.perf_counter() - began)
            summary("proxied (CONNECT)", proxied)

            stream = await trio.open_unix_socket(path)
            total = args.mib * 2**20
            block = b"ECHO" + b"x" * 65532
            began = time.perf_counter()
            async with stream:
                await stream.send_all(connect)
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += await stream.receive_some(1)

                async def send() -> None:
                    sent = 0
                    while sent < total:
                        await stream.send_all(block)
                        sent += len(block)
                    await stream.send_eof()

                async with trio.open_nursery() as inner:
                    inner.start_soon(send)
                    got = await count_all(stream)
            seconds = time.perf_counter() - began
            mib = got / 2**20
            print(f"{'throughput (echo tunnel)':<28} {mib / seconds:7.1f} MiB/s ({mib:.0f} MiB each way)")
        await sandboxed(args, port)
        nursery.cancel_scope.cancel()


CLIENT = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1',3128));s.sendall(sys.argv[1].encode())\n"
    "while s.recv(65536): pass\n"
)


async def sandboxed(args: argparse.Namespace, port: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-netproxy-"))
    os.chmod(root, 0o711)
    (root / "work").mkdir(mode=0o711)
    os.chmod(root / "work", 0o711)
    request = f"CONNECT bench.test:{port} HTTP/1.1\r\n\r\n" + REQUEST.decode()
    listed = Tool(
        name="b", description="b", parameters={"type": "object"}, permission_level=0,
        command=("/usr/bin/python3", "-I", "-S", "-c", CLIENT, request),
        sandbox=SandboxNeeds(network=({"host": "bench.test", "port": port, "addresses": ["127.0.0.1"]},)),
    )  # fmt: skip
    closed = Tool(name="b", description="b", parameters={"type": "object"}, permission_level=0,
                  command=("/usr/bin/python3", "-I", "-S", "-c", "pass"))  # fmt: skip
    egress = Egress(config=ProxyConfig(resolver=HostsResolver({"bench.test": ["127.0.0.1"]})))
    for name, tool in (("sandboxed call, network off", closed), ("sandboxed call, one tunnel", listed)) * 2:
        times: list[float] = []
        for _ in range(args.calls):
            began = time.perf_counter()
            result = await run_tool(
                tool, {}, workspace=root / "ws", work_root=root / "work", subject="b", egress=egress
            )
            times.append(time.perf_counter() - began)
            assert result.status == "ok", result
        summary(name, times)
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20)
    trio.run(main, parser.parse_args())
