"""The metrics registry's text format, and the health listener over a real socket on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio

from engine.server.health import serve_health
from engine.server.metrics import (
    CONTENT_TYPE,
    OVERFLOW,
    Counter,
    Gauge,
    Histogram,
    Registry,
    ServerMetrics,
    format_value,
)

# --- rendering ------------------------------------------------------------------------


def test_counter_with_escaped_labels_renders_exactly() -> None:
    registry = Registry()
    help_text = 'Calls, with "quotes" and a back\\slash\nand a newline.'
    calls = registry.counter("demo_calls_total", help_text, ("tool", "status"))
    calls.inc(tool='say "hi"', status="ok")
    calls.inc(2, tool="back\\slash", status="line\nfeed")
    calls.inc(tool='say "hi"', status="ok")
    assert registry.render() == (
        '# HELP demo_calls_total Calls, with "quotes" and a back\\\\slash\\nand a newline.\n'
        "# TYPE demo_calls_total counter\n"
        'demo_calls_total{tool="back\\\\slash",status="line\\nfeed"} 2.0\n'
        'demo_calls_total{tool="say \\"hi\\"",status="ok"} 2.0\n'
    )


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    latency = registry.histogram("demo_seconds", "Latency.", ("tool",), buckets=(0.01, 0.1, 1))
    for value in (0.005, 0.01, 0.05, 0.5, 3.0):  # 0.01 sits on a bound: it belongs to le="0.01"
        latency.observe(value, tool="grep")
    assert registry.render() == (
        "# HELP demo_seconds Latency.\n"
        "# TYPE demo_seconds histogram\n"
        'demo_seconds_bucket{tool="grep",le="0.01"} 2\n'
        'demo_seconds_bucket{tool="grep",le="0.1"} 3\n'
        'demo_seconds_bucket{tool="grep",le="1.0"} 4\n'
        'demo_seconds_bucket{tool="grep",le="+Inf"} 5\n'
        'demo_seconds_sum{tool="grep"} 3.565\n'
        'demo_seconds_count{tool="grep"} 5\n'
    )


def test_unlabelled_metrics_show_zero_and_labelled_ones_only_their_header() -> None:
    registry = Registry()
    registry.counter("a_total", "A.")
    registry.histogram("b_seconds", "B.", buckets=(1,))
    registry.counter("c_total", "C.", ("code",))
    assert registry.render() == (
        "# HELP a_total A.\n# TYPE a_total counter\na_total 0.0\n"
        "# HELP b_seconds B.\n# TYPE b_seconds histogram\n"
        'b_seconds_bucket{le="1.0"} 0\nb_seconds_bucket{le="+Inf"} 0\nb_seconds_sum 0.0\nb_seconds_count 0\n'
        "# HELP c_total C.\n# TYPE c_total counter\n"
    )


def test_gauge_set_inc_dec_and_callbacks() -> None:
    registry = Registry()
    level = registry.gauge("demo_level", "Level.")
    level.set(5)
    level.inc()
    level.dec(2.5)
    assert level.value() == 3.5
    queue = registry.gauge("demo_queue", "Queue.", ("kind",))
    queue.set_callback(lambda: {("b",): 2, ("a",): 1})
    live = registry.gauge("demo_live", "Live.")
    things = [1, 2, 3]
    live.set_callback(lambda: len(things))
    things.append(4)
    text = registry.render()
    assert "demo_level 3.5\n" in text
    assert 'demo_queue{kind="a"} 1.0\ndemo_queue{kind="b"} 2.0\n' in text
    assert "demo_live 4.0\n" in text


def test_a_failing_gauge_callback_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    broken = registry.gauge("demo_broken", "Broken.")
    broken.set_callback(lambda: 1 / 0)
    registry.counter("demo_after_total", "After.").inc()
    with caplog.at_level(logging.ERROR):
        text = registry.render()
    assert "# TYPE demo_broken gauge\n# HELP demo_after_total" in text
    assert "demo_after_total 1.0\n" in text
    assert "gauge callback failed" in caplog.text


def test_format_value_spellings() -> None:
    assert [format_value(v) for v in (1, 0.25, float("inf"), float("-inf"), float("nan"), 1e16)] == [
        "1.0", "0.25", "+Inf", "-Inf", "NaN", "1e+16"
    ]


def test_programming_errors_are_refused() -> None:
    registry = Registry()
    calls = registry.counter("demo_total", "Demo.", ("tool",))
    with pytest.raises(ValueError, match="takes labels"):
        calls.inc(status="ok")
    with pytest.raises(ValueError, match="only goes up"):
        calls.inc(-1, tool="x")
    with pytest.raises(ValueError, match="end in _total"):
        Counter("demo", "Demo.")
    with pytest.raises(ValueError, match="invalid metric name"):
        Gauge("demo-level", "Demo.")
    with pytest.raises(ValueError, match="invalid label name"):
        Gauge("demo_level", "Demo.", ("__reserved",))
    with pytest.raises(ValueError, match="ascending"):
        Histogram("demo_seconds", "Demo.", buckets=(1, 0.5))
    with pytest.raises(ValueError, match="reserved"):
        Histogram("demo_seconds", "Demo.", ("le",))
    with pytest.raises(ValueError, match="clashes"):
        registry.counter("demo_total", "Again.")
    registry.histogram("lat", "Latency.")
    with pytest.raises(ValueError, match="clashes"):
        registry.gauge("lat_count", "Clashes with the histogram's _count.")
    registry.gauge("open", "Open now.")
    with pytest.raises(ValueError, match="clashes"):
        registry.counter("open_total", "Its OpenMetrics family would be 'open' too.")


def test_too_many_label_values_fold_into_one_overflow_series(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    calls = registry.counter("demo_total", "Demo.", ("tool",), max_series=3)
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            calls.inc(tool=f"t{i}")
    text = registry.render()
    assert text.count("demo_total{") == 4  # three real series and the overflow one
    assert f'demo_total{{tool="{OVERFLOW}"}} 7.0\n' in text
    assert caplog.text.count("too many label combinations") == 1


def test_server_metrics_names_and_tool_labels() -> None:
    metrics = ServerMetrics()
    metrics.record_tool_call("grep", "ok", 0.002, configured=True)
    metrics.record_tool_call("someone's-private-tool", "ok", 0.1, configured=False, offered=True)
    metrics.record_tool_call("no-such-tool", "error", configured=False)
    metrics.record_resource_read("db", "ok")
    metrics.record_resource_read(None, "not_found")
    metrics.track(connections=lambda: 2, sessions=lambda: 1, pending_approvals=lambda: 0)
    metrics.record_config_reload(ok=True)
    metrics.record_config_reload(ok=False)
    text = metrics.render()
    for name, kind in [
        ("sconnect_connections", "gauge"), ("sconnect_connections_accepted_total", "counter"),
        ("sconnect_auth_failures_total", "counter"), ("sconnect_sessions", "gauge"),
        ("sconnect_turns_total", "counter"), ("sconnect_turn_seconds", "histogram"),
        ("sconnect_tool_calls_total", "counter"), ("sconnect_tool_call_seconds", "histogram"),
        ("sconnect_resource_reads_total", "counter"), ("sconnect_pending_approvals", "gauge"),
        ("sconnect_config_reloads_total", "counter"), ("sconnect_config_reload_errors_total", "counter"),
        ("sconnect_frames_total", "counter"), ("sconnect_errors_total", "counter"),
        ("sconnect_start_time_seconds", "gauge"), ("sconnect_config_last_reload_ok", "gauge"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text
    assert 'sconnect_tool_calls_total{tool="grep",status="ok"} 1.0\n' in text
    assert 'sconnect_tool_calls_total{tool="_client",status="ok"} 1.0\n' in text
    assert 'sconnect_tool_calls_total{tool="_unknown",status="error"} 1.0\n' in text
    assert "someone" not in text and "no-such-tool" not in text
    assert 'sconnect_tool_call_seconds_count{tool="_unknown"}' not in text  # it never ran
    assert 'sconnect_resource_reads_total{scheme="_invalid",outcome="not_found"} 1.0\n' in text
    assert 'sconnect_frames_total{direction="in"} 0.0\nsconnect_frames_total{direction="out"} 0.0\n' in text
    assert "sconnect_connections 2.0\n" in text
    assert "sconnect_config_reloads_total 1.0\n" in text and "sconnect_config_reload_errors_total 1.0\n" in text
    assert "sconnect_config_last_reload_ok 0.0\n" in text


# --- the listener ---------------------------------------------------------------------

Ready = list[tuple[bool, str]]


async def _start(
    nursery: trio.Nursery, metrics: ServerMetrics, state: Ready, **options: float
) -> tuple[str, int]:
    url = await nursery.start(
        lambda task_status: serve_health(
            "127.0.0.1", 0, metrics=metrics, ready=lambda: state[0], task_status=task_status, **options
        )
    )
    assert url.startswith("http://127.0.0.1:")
    return url, int(url.rsplit(":", 1)[1])


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes, return everything it sent."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        chunks = []
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def _parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
def ready_state() -> Ready:
    return [(True, "config loaded, audit writer running")]


async def test_healthz_readyz_and_metrics(nursery: trio.Nursery, ready_state: Ready) -> None:
    metrics = ServerMetrics()
    with trio.fail_after(5):
        _url, port = await _start(nursery, metrics, ready_state)
        status, headers, body = _parse(await _exchange(port, _get("/healthz")))
        assert (status, body) == (200, b"ok\n")
        assert headers["connection"] == "close"
        assert headers["content-type"].startswith("text/plain")

        status, _, body = _parse(await _exchange(port, _get("/readyz")))
        assert status == 200 and body.startswith(b"ready")
        ready_state[0] = (False, "shutting down")
        status, _, body = _parse(await _exchange(port, _get("/readyz")))
        assert (status, body) == (503, b"not ready: shutting down\n")

        status, headers, body = _parse(await _exchange(port, _get("/metrics?debug=1")))
        assert status == 200
        assert headers["content-type"] == CONTENT_TYPE
        assert int(headers["content-length"]) == len(body)
        assert b"sconnect_config_reloads_total 0.0\n" in body
        metrics.config_reloads_total.inc()
        _, _, body = _parse(await _exchange(port, _get("/metrics")))
        assert b"sconnect_config_reloads_total 1.0\n" in body


async def test_head_404_405_and_malformed(nursery: trio.Nursery, ready_state: Ready) -> None:
    with trio.fail_after(5):
        _url, port = await _start(nursery, ServerMetrics(), ready_state)
        status, headers, body = _parse(await _exchange(port, _get("/healthz", "HEAD")))
        assert (status, body, headers["content-length"]) == (200, b"", "3")
        status, _, _ = _parse(await _exchange(port, _get("/nowhere")))
        assert status == 404
        status, headers, _ = _parse(await _exchange(port, _get("/metrics", "POST")))
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, _, _ = _parse(await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n"))
        assert status == 400


async def test_oversized_request_is_refused(nursery: trio.Nursery, ready_state: Ready) -> None:
    with trio.fail_after(5):
        _url, port = await _start(nursery, ServerMetrics(), ready_state, max_request_bytes=1024)
        huge = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 4000 + b"\r\n\r\n"
        status, _, _ = _parse(await _exchange(port, huge))
        assert status == 431
        # A request head that never ends is refused as soon as it passes the limit.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 2000)
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
        assert _parse(response)[0] == 431
        status, _, _ = _parse(await _exchange(port, _get("/healthz")))
        assert status == 200


async def test_a_silent_client_times_out_and_others_are_served(nursery: trio.Nursery, ready_state: Ready) -> None:
    with trio.fail_after(5):
        _url, port = await _start(nursery, ServerMetrics(), ready_state, request_timeout_s=0.5)
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        slow = await trio.open_tcp_stream("127.0.0.1", port)
        await slow.send_all(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        # Served while the other two hold their connections open.
        status, _, _ = _parse(await _exchange(port, _get("/healthz")))
        assert status == 200
        started = trio.current_time()
        for stream in (silent, slow):
            async with stream:
                assert await stream.receive_some(1024) == b""  # closed by the server, unanswered
        assert 0.3 < trio.current_time() - started < 2
        status, _, _ = _parse(await _exchange(port, _get("/healthz")))
        assert status == 200


async def test_failing_ready_check_and_client_reset_do_not_end_the_listener(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    with trio.fail_after(5):
        url = await nursery.start(
            lambda task_status: serve_health(
                "127.0.0.1", 0, metrics=ServerMetrics(), ready=broken, task_status=task_status
            )
        )
        port = int(url.rsplit(":", 1)[1])
        with caplog.at_level(logging.ERROR):
            status, _, body = _parse(await _exchange(port, _get("/readyz")))
        assert status == 503 and b"readiness check failed" in body
        # A client that connects and leaves at once.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
        status, _, _ = _parse(await _exchange(port, _get("/healthz")))
        assert status == 200


async def test_too_many_connections_are_dropped_not_queued(nursery: trio.Nursery, ready_state: Ready) -> None:
    with trio.fail_after(5):
        _url, port = await _start(nursery, ServerMetrics(), ready_state, max_connections=2, request_timeout_s=3)
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.05)  # let the server take both
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        async with extra:
            assert await extra.receive_some(1024) == b""
        for stream in held:
            await stream.aclose()
        await trio.sleep(0.05)
        status, _, _ = _parse(await _exchange(port, _get("/healthz")))
        assert status == 200


async def test_url_for_a_host_name_resolving_to_several_addresses(nursery: trio.Nursery, ready_state: Ready) -> None:
    check: Callable[[], tuple[bool, str]] = lambda: ready_state[0]  # noqa: E731
    with trio.fail_after(5):
        url = await nursery.start(
            lambda task_status: serve_health(
                "localhost", 0, metrics=ServerMetrics(), ready=check, task_status=task_status
            )
        )
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        async with stream:
            await stream.send_all(_get("/healthz"))
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
        assert _parse(response)[0] == 200
