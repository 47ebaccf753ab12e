"""Resources over MCP: our URI templates, reads through the same resolver, policy and audit.

Not found is the MCP resource-not-found error (-32602, data.uri); a URI that climbs out
with '..' or reaches what policy denies is refused by our own parser and policy, audited.
"""

from __future__ import annotations

import pytest
import trio

from engine.audit import query
from tests.mcp.conftest import MODES, McpServer, mcp_client


@pytest.mark.parametrize("mode", MODES)
async def test_templates_are_listed_per_caller_and_read(mcp_server: McpServer, mode: str) -> None:
    with trio.fail_after(30):
        async with mcp_client(mcp_server.mcp, mcp_server.token(), mode=mode) as client:
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert {"file://local/documents/{path}", "db://users/profile/{id}"} <= templates
            assert "file://local/secrets/{path}" not in templates  # policy: users read documents/, not secrets/
            # Every host here is a template but the memory host, whose own URI is the reader's memories.
            assert [str(r.uri) for r in (await client.list_resources()).resources] == ["memory://memory"]
            document = await client.read_resource("file://local/documents/welcome.md")
            profile = await client.read_resource("db://users/profile/1")
    [text] = document.contents
    assert text.uri == "file://local/documents/welcome.md" and text.text and text.mime_type.startswith("text/")
    assert '"id": 1' in profile.contents[0].text or '"id":1' in profile.contents[0].text
    reads = query(mcp_server.settings.state_dir, kind="resource_read")
    assert {r.outcome for r in reads} == {"ok"} and len(reads) == 2
    assert {r.to_dict()["details"]["transport"] for r in reads} == {"mcp-http"}


@pytest.mark.parametrize(("uri", "code"), [
    ("file://local/documents/no-such-file.md", "not_found"),
    ("file://local/documents/../secrets/example-credentials.txt", "invalid_arguments"),
    ("file://local/secrets/example-credentials.txt", "forbidden"),
    ("nope://x/y", "not_found"),
])
async def test_bad_reads_are_protocol_errors_and_audited(mcp_server: McpServer, uri: str, code: str) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        async with mcp_client(mcp_server.mcp, mcp_server.token()) as client:
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            # The session carries on.
            assert (await client.read_resource("file://local/documents/welcome.md")).contents
    error = caught.value.error
    assert error.code == -32602 and error.data["uri"] == uri, error
    assert error.data["code"] == code, error
    if code == "not_found" and "documents" in uri:
        assert error.message == f"Resource not found: {uri}"
    refused = [r for r in query(mcp_server.settings.state_dir) if r.target == uri]
    assert refused and refused[-1].outcome != "ok"
    assert not [r for r in refused if r.kind == "resource_read" and r.outcome == "ok"]
