"""Traces (engine/tracing.py) with the OpenTelemetry SDK capturing spans in memory.

- test_nothing_is_traced_without_an_sdk: a fresh interpreter running a turn's code paths
  has no OpenTelemetry loaded by us and ``span`` is the shared null context.
- test_a_turn_is_a_tree_of_spans_without_arguments: a conversation that calls a tool gives
  sconnect.turn > (sconnect.model per step, sconnect.action > (sconnect.decision,
  sconnect.sandbox.run)), store spans, with subject, agent, session, tool, decision and call id as attributes; no
  attribute holds the tool's arguments or the message text.
- test_the_approval_wait_is_a_span: a level-1 tool approved by the user: the wait is a
  span under its action, ending with the outcome.
- test_a_traceparent_on_the_handshake_continues_the_callers_trace: the turn's spans
  carry the trace id of the client's ``traceparent`` header, under its span id.
- test_a_traceparent_in_a_frame_continues_the_callers_trace: a ``user_message`` or
  ``tool_call`` frame's ``traceparent`` (winning over the handshake's) parents the span
  of that frame, and the turn or the call it starts stays in the trace.
- test_a_malformed_traceparent_changes_nothing: a new trace starts.
- test_a_malformed_traceparent_in_a_frame_is_refused: ``invalid_message``, naming it.
- test_configure_from_env: ``OTEL_TRACES_EXPORTER`` unset / ``none`` leaves tracing as it
  is, an unknown exporter is refused (logged, returns False).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from engine import tracing
from engine.client import open_client
from engine.protocol import AgentResponse, AgentResult, ErrorFrame, ToolCall, UserMessage, new_id
from tests.conftest import REPO
from tests.engine.conftest import RunningServer

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK is not installed")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

_EXPORTER = InMemorySpanExporter()


class _WhileTesting(SimpleSpanProcessor):
    """Exports only during a test that asked for spans: the provider stays for the rest of
    the run (it cannot be replaced), the spans of other tests are not kept."""

    active = False

    def on_end(self, span: Any) -> None:
        if self.active:
            super().on_end(span)


_PROCESSOR = _WhileTesting(_EXPORTER)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry refuses to replace it),
    exporting to memory; emptied for each test."""
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _PROCESSOR.active = True
    try:
        yield _EXPORTER
    finally:
        _PROCESSOR.active = False
        _EXPORTER.clear()


def _named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _ended(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    """The spans named ``name`` once one has ended: a turn's span ends just after its
    answer was sent, so the client may see the answer first."""
    for _ in range(500):  # bounded (and under the test's fail_after)
        if _named(exporter, name):
            break
        await trio.sleep(0.01)
    return _named(exporter, name)


def test_nothing_is_traced_without_an_sdk() -> None:
    code = ("import sys; from engine import tracing; from engine.server import app; "
            "assert not tracing.enabled(); assert tracing.span('x', subject='a') is tracing._NULL; "
            "print('opentelemetry.sdk' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


async def test_a_turn_is_a_tree_of_spans_without_arguments(server: RunningServer,
                                                           spans: InMemorySpanExporter) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "what is 6*7")
            assert turn.response.content == "6*7 = 42"
            [turn_span] = await _ended(spans, "sconnect.turn")
    assert {k: turn_span.attributes[k] for k in ("sconnect.subject", "sconnect.agent", "sconnect.session_id")} == {
        "sconnect.subject": "alice", "sconnect.agent": "assistant", "sconnect.session_id": sid}
    [action] = _named(spans, "sconnect.action")
    assert action.parent.span_id == turn_span.context.span_id
    steps = _named(spans, "sconnect.model")
    assert [s.attributes["sconnect.tool_calls"] for s in steps] == [1, 0]  # a tool call, then the answer
    assert all(s.parent.span_id == turn_span.context.span_id for s in steps)
    assert action.attributes["sconnect.tool"] == "calculator"
    assert action.attributes["sconnect.decision"] == "allow"
    call_id = action.attributes["sconnect.call_id"]
    assert action.attributes["sconnect.status"] == "ok"
    for child in ("sconnect.decision", "sconnect.sandbox.run"):
        [span] = _named(spans, child)
        assert span.parent.span_id == action.context.span_id and span.attributes["sconnect.call_id"] == call_id
    store = [s for s in spans.get_finished_spans() if s.name.startswith("sconnect.store.")]
    assert {"sconnect.store.create_session", "sconnect.store.append_message"} <= {s.name for s in store}
    assert all(s.attributes["db.system"] == "sqlite" for s in store)
    assert any(s.parent is not None and s.parent.span_id == turn_span.context.span_id for s in store)
    texts = [str(v) for s in spans.get_finished_spans() for v in (s.attributes or {}).values()]
    assert not any("6*7" in text or "what is" in text for text in texts), texts


async def test_the_approval_wait_is_a_span(server: RunningServer, spans: InMemorySpanExporter) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as client:
            await client.call_tool("read_file", {"path": "missing.txt"}, approve=lambda action: True)
    [wait] = _named(spans, "sconnect.approval.wait")
    [action] = _named(spans, "sconnect.action")
    assert wait.parent.span_id == action.context.span_id
    assert (wait.attributes["sconnect.approver"], wait.attributes["sconnect.outcome"]) == ("user", "approved")
    assert wait.attributes["sconnect.tool"] == "read_file"


async def test_a_traceparent_on_the_handshake_continues_the_callers_trace(server: RunningServer,
                                                                          spans: InMemorySpanExporter) -> None:
    header = ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice"), extra_headers=[header]) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.converse(sid, "what is 2*3")
            [turn_span] = await _ended(spans, "sconnect.turn")
    assert format(turn_span.context.trace_id, "032x") == TRACE_ID
    # The turn is under the span of the frame that started it, which is under the client's.
    [frame_span] = [s for s in _named(spans, "sconnect.frame") if s.context.span_id == turn_span.parent.span_id]
    assert frame_span.attributes["sconnect.type"] == "user_message"
    assert format(frame_span.parent.span_id, "016x") == PARENT_ID
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in _named(spans, "sconnect.action"))


async def test_a_traceparent_in_a_frame_continues_the_callers_trace(server: RunningServer,
                                                                    spans: InMemorySpanExporter) -> None:
    other_trace, other_parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with trio.fail_after(30):
        # The handshake names one trace; each frame may name its own, which wins for that request.
        header = ("traceparent", f"00-{other_trace}-{other_parent}-01")
        async with open_client(server.url, server.token("alice"), extra_headers=[header]) as client:
            sid = (await client.start_session("assistant")).session_id
            await client.send(UserMessage(id=new_id(), session_id=sid, content="what is 2*3",
                                          traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
            await client.next_event_of(AgentResponse)
            [turn_span] = await _ended(spans, "sconnect.turn")
            await client.send(ToolCall(id=new_id(), name="calculator", arguments={"expression": "6*7"},
                                       traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
            await client.next_event_of(AgentResult)
            actions = await _ended(spans, "sconnect.action")
    assert format(turn_span.context.trace_id, "032x") == TRACE_ID
    assert actions and all(format(s.context.trace_id, "032x") == TRACE_ID for s in actions)
    frames = [s for s in _named(spans, "sconnect.frame")
              if s.attributes["sconnect.type"] in ("user_message", "tool_call")]
    assert len(frames) == 2 and all(format(s.parent.span_id, "016x") == PARENT_ID for s in frames)


async def test_a_malformed_traceparent_in_a_frame_is_refused(server: RunningServer) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as client:
            sid = (await client.start_session("assistant")).session_id
            sent = await client.send(UserMessage(id=new_id(), session_id=sid, content="hi", traceparent="00-zz-1-01"))
            error = await client.next_event_of(ErrorFrame)
    assert error.reply_to == sent and str(error.code) == "invalid_message" and "traceparent" in error.message


async def test_a_malformed_traceparent_changes_nothing(server: RunningServer, spans: InMemorySpanExporter) -> None:
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice"), extra_headers=[("traceparent", "00-zz-1-01")]) as c:
            sid = (await c.start_session("assistant")).session_id
            await c.converse(sid, "what is 2*3")
            [turn_span] = await _ended(spans, "sconnect.turn")
    assert format(turn_span.context.trace_id, "032x") != TRACE_ID
    assert all(s.parent is None for s in _named(spans, "sconnect.frame"))


def test_configure_from_env(spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    assert tracing.configure_from_env({}) is True  # already on (the fixture's provider): left as it is
    assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is True
    assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "carrier-pigeon"}) is False
    assert "not one of otlp, console, none" in caplog.text
