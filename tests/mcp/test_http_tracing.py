"""Traces over MCP (engine/tracing.py): a ``tools/call`` whose HTTP request carries a
W3C ``traceparent`` header is a ``sconnect.mcp.request`` span in the caller's trace, with
the action, its decision and its sandbox run under it; the arguments appear in no
attribute.  The SDK's own server span for the request (which runs only while tracing is
on: ``engine.mcp._gateway.WhenTracing``) is there too."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.mcp.conftest import McpServer

pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK is not installed")
from tests.engine.test_tracing import PARENT_ID, TRACE_ID, _ended  # noqa: E402
from tests.engine.test_tracing import spans as spans  # noqa: E402, F401  (the fixture)


async def test_a_traceparent_header_continues_the_callers_trace(mcp_server: McpServer, spans: Any) -> None:  # noqa: F811
    import mcp_types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {mcp_server.token()}", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    with trio.fail_after(30):
        async with create_mcp_http_client(headers=headers) as http, Client(
                streamable_http_client(mcp_server.mcp, http_client=http),
                client_info=mcp_types.Implementation(name="tracing-test", version="1")) as client:
            result = await client.call_tool("calculator", {"expression": "6*7"})
            assert not result.is_error
        [request] = await _ended(spans, "sconnect.mcp.request")
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert (request.attributes["mcp.method"], request.attributes["sconnect.tool"]) == ("tools/call", "calculator")
    [action] = [s for s in spans.get_finished_spans() if s.name == "sconnect.action"]
    assert action.parent.span_id == request.context.span_id
    assert action.attributes["sconnect.decision"] == "allow"
    [sdk_span] = [s for s in spans.get_finished_spans() if s.name == "tools/call calculator"]
    assert sdk_span.attributes["gen_ai.tool.name"] == "calculator"
    texts = [str(v) for s in spans.get_finished_spans() for v in (s.attributes or {}).values()]
    assert not any("6*7" in text for text in texts), texts
