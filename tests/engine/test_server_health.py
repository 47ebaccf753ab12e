"""The health and metrics listener of a real server answers while a turn runs."""

from __future__ import annotations

from pathlib import Path

import trio

from engine.client import open_client
from engine.protocol import ToolCall
from tests.engine.conftest import SLEEPER, RunningServer


async def http_get(base: str, path: str) -> tuple[int, str]:
    host, port = base.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_health_and_metrics_answer_while_a_tool_runs(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker="1618.0339"))
    server: RunningServer = await start_server(config_dir, health_port=0)
    assert server.health_url is not None
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            await client.call_tool("calculator", {"expression": "1+1"})
            await client.send(ToolCall(id="long", name="sleeper", arguments={}))
            await trio.sleep(0.3)
            assert await http_get(server.health_url, "/healthz") == (200, "ok\n")
            status, ready = await http_get(server.health_url, "/readyz")
            assert status == 200 and ready.startswith("ready")
            status, text = await http_get(server.health_url, "/metrics")
            assert status == 200
            assert metric(text, "sconnect_connections") == 1
            assert 'sconnect_tool_calls_total{tool="calculator",status="ok"} 1' in text
            assert metric(text, "sconnect_frames_total") > 0
        from trio_websocket import ConnectionRejected

        try:
            async with open_client(server.url, "not-a-token"):
                pass
        except ConnectionRejected:
            pass
        _, text = await http_get(server.health_url, "/metrics")
        assert 'sconnect_auth_failures_total{reason="malformed"} 1' in text
